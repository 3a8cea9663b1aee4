"""The process environment the in-process handlers see, as the stack sets it."""

from __future__ import annotations

import os

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"

BASE_ENV = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "S3VirusScanner",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}


class Environment:
    """Sets variables and puts every one back as it was on ``restore()``.

    The handlers read their settings once (``load_settings`` is cached); every
    change here clears that cache so the next invocation sees it.
    """

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved.setdefault(key, os.environ.get(key))
            os.environ[key] = value
        reset_settings()

    def restore(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()
        reset_settings()


def reset_settings() -> None:
    from functions.shared.config import load_settings

    load_settings.cache_clear()
