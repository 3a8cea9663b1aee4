"""boto3 clients, built once per container and reused by warm invocations."""

from __future__ import annotations

import functools
from typing import Any

import boto3
from botocore.config import Config

# Adaptive retries absorb short throttling bursts inside the call; what is left
# surfaces as a named transient error and the state machine retries it.
_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 5}, connect_timeout=5)


@functools.cache
def client(service: str) -> Any:
    return boto3.client(service, config=_CONFIG)


THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "InternalError",
        # A conflicting concurrent request on the same object or bucket: try again.
        "ConditionalRequestConflict",
        "OperationAborted",
        "InternalServerError",
        "ServiceUnavailable",
        "503",
        "500",
    }
)


# What S3 answers for a key or version that is not there, and for a failed
# If-Match (the object changed since the event).
GONE_CODES = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound"})
CHANGED_CODES = frozenset({"412", "PreconditionFailed"})
# The content exists but may not be read: a policy, or a KMS key the reader may
# not use (S3 answers AccessDenied for most of those; some KMS states carry
# their own code).
DENIED_CODES = frozenset({"403", "AccessDenied", "Forbidden"})
# An archived object (Glacier Flexible Retrieval, Deep Archive, an
# Intelligent-Tiering archive tier) that was not restored.
ARCHIVED_CODES = frozenset({"InvalidObjectState"})


def is_denied(err: Exception) -> bool:
    code = error_code(err)
    return code in DENIED_CODES or code.startswith("KMS.")


def error_code(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def is_transient(err: Exception) -> bool:
    return error_code(err) in THROTTLING_CODES
