"""Runtime settings of the Lambda functions, read from the environment once.

The stack provisions these variables; ``load_settings()`` parses and validates
them on first use and every step reads the same frozen object afterwards. A
missing or malformed value is one ``ConfigurationError`` sentence that names the
variable. Domain code never reads ``os.environ``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from functions.shared.errors import ConfigurationError
from functions.shared.freshclam import FreshclamSettings
from functions.shared.signing import signing_key

# ClamAV cannot scan a single file of 2 GiB or more (its size fields are 32-bit).
CLAMAV_MAX_FILE_BYTES = 2 * 1024**3 - 1
MIB = 1024**2

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, got {raw!r}.") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}.")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}.") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}.")
    return value


def validate_webhook_url(name: str, raw: str, allow_loopback_http: bool = True) -> str:
    """HTTPS only; plain HTTP is accepted for a loopback receiver (local runs, tests)."""
    parsed = urlparse(raw)
    if not parsed.netloc or parsed.scheme not in ("https", "http"):
        raise ConfigurationError(f"{name} must be an https:// URL, got {raw!r}.")
    if parsed.scheme == "http" and not (allow_loopback_http and parsed.hostname in _LOOPBACK_HOSTS):
        raise ConfigurationError(
            f"{name} must use https:// (plain http is allowed only for a loopback "
            f"receiver), got {raw!r}."
        )
    return raw


@dataclass(frozen=True)
class Settings:
    source_bucket: str | None
    table_name: str | None
    quarantine_bucket: str | None
    webhook_url: str | None
    webhook_secret: str | None
    webhook_secret_arn: str | None
    webhook_timeout_s: float
    definitions_bucket: str | None
    definitions_prefix: str
    state_machine_arn: str | None
    # WORKFLOW_TYPE=EXPRESS: objects up to express_max_object_bytes go to the
    # Express machine, larger ones (and those of unknown size) to the Standard one.
    express_state_machine_arn: str | None
    express_max_object_bytes: int
    # The Express machine's execution log: the reconciliation reads its failures.
    express_log_group: str | None
    notify_function: str | None
    # Where Object Scan Result events go: the account's default bus, or EVENT_BUS_ARN.
    event_bus: str
    scan_queue_url: str | None
    retroscan_hours: int
    max_object_bytes: int
    max_scan_bytes: int
    max_definitions_age_hours: float
    clamav_work_dir: str
    clamd_start_timeout_s: float
    environment: str
    database_mirror: str
    private_mirror: str | None
    freshclam_attempts: int
    # Where the updater keeps freshclam.dat (its client UUID and CDN cool-down):
    # in the cache bucket, outside the scanners' prefix and tarball.
    freshclam_state_key: str
    # How long a cold scanner whose freshclam fallback may not fetch waits for
    # the cache (the updater filling it); well inside the scanner's timeout.
    definitions_wait_s: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        webhook_url = env.get("WEBHOOK_URL", "").strip() or None
        if webhook_url:
            validate_webhook_url("WEBHOOK_URL", webhook_url)
        webhook_secret = env.get("WEBHOOK_SECRET") or None
        if webhook_secret:
            signing_key(webhook_secret, "WEBHOOK_SECRET")
        max_mb = _int(env, "MAX_OBJECT_SIZE_MB", 1024, 1, CLAMAV_MAX_FILE_BYTES // MIB)
        prefix = env.get("DEFINITIONS_PREFIX", "clamav/defs").strip().strip("/") or "clamav/defs"
        state_key = env.get("FRESHCLAM_STATE_KEY", "").strip().strip("/")
        state_key = state_key or "clamav/updater/freshclam.dat"
        if state_key.startswith(f"{prefix}/"):
            raise ConfigurationError(
                f"FRESHCLAM_STATE_KEY must be outside DEFINITIONS_PREFIX ({prefix}/), which "
                f"the scanners read, got {state_key!r}."
            )
        return cls(
            source_bucket=env.get("SOURCE_BUCKET_NAME", "").strip() or None,
            table_name=env.get("DDB_TABLE_NAME", "").strip() or None,
            quarantine_bucket=env.get("QUARANTINE_BUCKET_NAME", "").strip() or None,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            webhook_secret_arn=env.get("WEBHOOK_SECRET_ARN", "").strip() or None,
            webhook_timeout_s=_float(env, "WEBHOOK_TIMEOUT_SECONDS", 10.0, 0.1, 60.0),
            definitions_bucket=env.get("DEFINITIONS_BUCKET_NAME", "").strip() or None,
            definitions_prefix=prefix,
            state_machine_arn=env.get("STATE_MACHINE_ARN", "").strip() or None,
            express_state_machine_arn=env.get("EXPRESS_STATE_MACHINE_ARN", "").strip() or None,
            express_max_object_bytes=_int(env, "EXPRESS_MAX_OBJECT_MB", 256, 1, 2047) * MIB,
            express_log_group=env.get("EXPRESS_LOG_GROUP", "").strip() or None,
            # The Notify Webhook function, for the failure recorder's notices.
            notify_function=env.get("NOTIFY_WEBHOOK_FUNCTION", "").strip() or None,
            event_bus=env.get("EVENT_BUS_ARN", "").strip() or "default",
            # Rescans (and the retro-scan) send their records here.
            scan_queue_url=env.get("SCAN_QUEUE_URL", "").strip() or None,
            retroscan_hours=_int(env, "RETROSCAN_AFTER_UPDATE_HOURS", 0, 0, 720),
            max_object_bytes=min(max_mb * MIB, CLAMAV_MAX_FILE_BYTES),
            # What ClamAV may extract from one object (archives expand); its temp
            # files share /tmp with the object, so the stack derives this from
            # the ephemeral storage it gives the scanner.
            max_scan_bytes=_int(env, "MAX_SCAN_SIZE_MB", min(4 * max_mb, 4095), max_mb, 4095) * MIB,
            max_definitions_age_hours=_float(env, "MAX_DEFINITIONS_AGE_HOURS", 48.0, 1.0, 8760.0),
            clamav_work_dir=env.get("CLAMAV_WORK_DIR", "").strip() or "/tmp/clamav",
            clamd_start_timeout_s=_float(env, "CLAMD_START_TIMEOUT_SECONDS", 600.0, 1.0, 900.0),
            environment=env.get("ENVIRONMENT", "").strip() or "dev",
            database_mirror=env.get("CLAMAV_DATABASE_MIRROR", "").strip() or "database.clamav.net",
            private_mirror=env.get("CLAMAV_PRIVATE_MIRROR", "").strip() or None,
            freshclam_attempts=_int(env, "FRESHCLAM_MAX_ATTEMPTS", 3, 1, 10),
            freshclam_state_key=state_key,
            definitions_wait_s=_float(env, "DEFINITIONS_WAIT_SECONDS", 120.0, 0.0, 600.0),
        )

    @property
    def freshclam(self) -> FreshclamSettings:
        return FreshclamSettings(
            database_mirror=self.database_mirror,
            private_mirror=self.private_mirror,
            attempts=self.freshclam_attempts,
        )

    def state_machine_for(self, size: int | None) -> str:
        """Where an object's scan runs: Express when configured and it is small
        enough to finish within Express's 5 minutes, else Standard."""
        standard = self.require("state_machine_arn", "STATE_MACHINE_ARN")
        express = self.express_state_machine_arn
        if express and size is not None and size <= self.express_max_object_bytes:
            return express
        return standard

    def require(self, attribute: str, variable: str) -> str:
        """A setting this step cannot run without."""
        value = getattr(self, attribute)
        if not value:
            raise ConfigurationError(f"{variable} is not set; the stack provisions it.")
        return value


@functools.cache
def load_settings() -> Settings:
    return Settings.from_env(os.environ)
