"""Deploy-time configuration: read once from the environment (and ``.env``).

A missing or malformed value stops the synth with one sentence that names the
variable (``DeployConfigError``); ``app.py`` prints it and exits with status 2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

_BUCKET_ARN = re.compile(r"^arn:(aws|aws-cn|aws-us-gov):s3:::([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])$")
# Key ARNs only: IAM does not authorize the use of a key through its alias ARN.
_KMS_WHAT = "a KMS key ARN (key/..., not an alias)"
_KMS_KEY_ARN = re.compile(r"^arn:(aws|aws-cn|aws-us-gov):kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")
# The complete ARN, with the 6-character suffix Secrets Manager appends: the
# grant names it exactly.
_SECRET_ARN = re.compile(
    r"^arn:(aws|aws-cn|aws-us-gov):secretsmanager:[a-z0-9-]+:\d{12}:"
    r"secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$"
)
_EVENT_BUS_ARN = re.compile(
    r"^arn:(aws|aws-cn|aws-us-gov):events:[a-z0-9-]+:\d{12}:event-bus/[A-Za-z0-9._/-]+$"
)
_TOPIC_ARN = re.compile(r"^arn:(aws|aws-cn|aws-us-gov):sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")
_ENVIRONMENT = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,19}$")
# Principals in a bucket policy condition on aws:PrincipalArn: IAM roles and users
# (wildcards allowed, as ArnLike allows them) or an account's root.
_PRINCIPAL_ARN = re.compile(
    r"^arn:(aws|aws-cn|aws-us-gov):iam::\d{12}:(root|(role|user)/[A-Za-z0-9+=,.@_/*-]+)$"
)
_SCHEDULE = re.compile(r"^(rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\(.+\))$")

# SQS records per start_scan invocation: each one StartExecution.
STARTER_BATCH_SIZE = 10
# ClamAV cannot scan a single file of 2 GiB or more.
MAX_OBJECT_SIZE_MB_LIMIT = 2047
# Room in /tmp for the loaded definitions and the next version being unpacked
# (the official database is about 400 MB unpacked).
DEFINITIONS_HEADROOM_MB = 1024


# What .env.example says until the user names their bucket: refused by name, so a
# copied example never deploys against a bucket that could be someone else's.
SOURCE_BUCKET_PLACEHOLDER = "arn:aws:s3:::<your-bucket-name>"


class DeployConfigError(ValueError):
    """One sentence naming the variable that is wrong."""


@dataclass(frozen=True)
class DeployConfig:
    source_bucket_arn: str
    quarantine_bucket_arn: str | None = None
    webhook_url: str | None = None
    environment: str = "dev"
    account: str | None = None
    region: str | None = None
    source_bucket_kms_key_arn: str | None = None
    quarantine_bucket_kms_key_arn: str | None = None
    webhook_secret_arn: str | None = None
    alarm_topic_arn: str | None = None
    update_schedule: str = "rate(4 hours)"
    scanner_memory_mb: int = 3008
    scanner_timeout_minutes: int = 15
    scanner_ephemeral_mb: int = 6144
    max_object_size_mb: int = 1024
    max_definitions_age_hours: int = 48
    database_mirror: str = "database.clamav.net"
    private_mirror: str | None = None
    # Bursts wait in the queue: at most this many starter invocations at once
    # (SQS event source MaximumConcurrency; AWS allows 2-1000), each starting up
    # to STARTER_BATCH_SIZE executions.
    scan_queue_max_concurrency: int = 5
    # Scanner containers that may run at once (reserved concurrency): each
    # cold one loads the whole database, so an unbounded fan-out would
    # multiply cold starts exactly when load is highest.
    scanner_reserved_concurrency: int = 50
    # STANDARD, or EXPRESS: objects up to express_max_object_mb run on an Express
    # machine (no transition quota, $1 per million plus duration), larger ones on
    # the Standard machine deployed beside it.
    workflow_type: str = "STANDARD"
    express_max_object_mb: int = 256
    # Express logs at level ALL; with execution data the console shows each state's
    # input and output, which is also most of the log bytes (docs/cost.md).
    express_log_execution_data: bool = True
    # The bucket that holds S3 Inventory reports a rescan may read its list from.
    inventory_bucket_arn: str | None = None
    # Object Scan Result events: this bus, or the account's default bus.
    event_bus_arn: str | None = None
    # After new definitions are published, rescan what was scanned with older
    # ones in the previous N hours (0: never).
    retroscan_after_update_hours: int = 0
    protect_source_bucket: bool = False
    unscanned_readers: tuple[str, ...] = ()

    @staticmethod
    def bucket_name(arn: str) -> str:
        return arn.rsplit(":", 1)[-1]

    @property
    def max_scan_size_mb(self) -> int:
        """ClamAV's MaxScanSize, also our unpacking's budget: up to 4x the object.

        /tmp holds the object, the definitions (current and next), and at
        worst twice MaxScanSize: what our unpacking writes and what clamd
        extracts while it scans that.
        """
        room = (self.scanner_ephemeral_mb - self.max_object_size_mb - DEFINITIONS_HEADROOM_MB) // 2
        return max(self.max_object_size_mb, min(4 * self.max_object_size_mb, 4095, room))

    @property
    def source_bucket_name(self) -> str:
        return self.bucket_name(self.source_bucket_arn)

    @property
    def quarantine_bucket_name(self) -> str | None:
        return self.bucket_name(self.quarantine_bucket_arn) if self.quarantine_bucket_arn else None


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _bucket_arn(env: Mapping[str, str], name: str, required: bool) -> str | None:
    value = _get(env, name)
    if value is None:
        if required:
            raise DeployConfigError(
                f"{name} is required: the ARN of the bucket to scan, e.g. arn:aws:s3:::my-uploads."
            )
        return None
    if not _BUCKET_ARN.match(value):
        raise DeployConfigError(
            f"{name} must be an S3 bucket ARN like arn:aws:s3:::my-bucket, got {value!r}."
        )
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _get(env, name)
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise DeployConfigError(
            f"{name} must be a whole number from {low} to {high}, got {value!r}."
        )
    return int(value)


def _match(env: Mapping[str, str], name: str, pattern: re.Pattern, what: str) -> str | None:
    value = _get(env, name)
    if value is not None and not pattern.match(value):
        raise DeployConfigError(f"{name} must be {what}, got {value!r}.")
    return value


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = _get(env, name)
    if value is None:
        return default
    if value.upper() not in allowed:
        raise DeployConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}.")
    return value.upper()


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _get(env, name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise DeployConfigError(f"{name} must be true or false, got {value!r}.")
    return value.lower() == "true"


def _principal_arns(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    value = _get(env, name)
    if value is None:
        return ()
    arns = tuple(a.strip() for a in value.split(",") if a.strip())
    for arn in arns:
        if not _PRINCIPAL_ARN.match(arn):
            raise DeployConfigError(
                f"{name} must be a comma-separated list of IAM role or user ARNs "
                f"(arn:aws:iam::123456789012:role/name), got {arn!r}."
            )
    return arns


def load_deploy_config(env: Mapping[str, str]) -> DeployConfig:
    if _get(env, "SOURCE_BUCKET_ARN") == SOURCE_BUCKET_PLACEHOLDER:
        raise DeployConfigError(
            "SOURCE_BUCKET_ARN is still .env.example's placeholder: set it to the ARN of "
            "your bucket to scan, e.g. arn:aws:s3:::my-uploads."
        )
    source = _bucket_arn(env, "SOURCE_BUCKET_ARN", required=True)
    assert source is not None
    quarantine = _bucket_arn(env, "QUARANTINE_BUCKET_ARN", required=False)
    if quarantine and DeployConfig.bucket_name(quarantine) == DeployConfig.bucket_name(source):
        raise DeployConfigError(
            "QUARANTINE_BUCKET_ARN must name a different bucket than SOURCE_BUCKET_ARN "
            "(quarantined objects would be scanned and quarantined again)."
        )
    webhook = _get(env, "WEBHOOK_URL")
    if webhook is not None:
        parsed = urlparse(webhook)
        if parsed.scheme != "https" or not parsed.netloc:
            raise DeployConfigError(
                f"WEBHOOK_URL must be an https:// URL (results are sent over TLS only), "
                f"got {webhook!r}."
            )
    account = _match(env, "ACCOUNT_ID", _ACCOUNT, "a 12-digit AWS account id") or _get(
        env, "CDK_DEFAULT_ACCOUNT"
    )
    region = _match(env, "REGION", _REGION, "an AWS region like eu-west-1") or _get(
        env, "CDK_DEFAULT_REGION"
    )
    config = DeployConfig(
        source_bucket_arn=source,
        quarantine_bucket_arn=quarantine,
        webhook_url=webhook,
        environment=_match(
            env, "ENVIRONMENT", _ENVIRONMENT, "a short name of letters, digits and dashes"
        )
        or "dev",
        account=account,
        region=region,
        source_bucket_kms_key_arn=_match(env, "SOURCE_BUCKET_KMS_KEY_ARN", _KMS_KEY_ARN, _KMS_WHAT),
        quarantine_bucket_kms_key_arn=_match(
            env,
            "QUARANTINE_BUCKET_KMS_KEY_ARN",
            _KMS_KEY_ARN,
            _KMS_WHAT,
        ),
        webhook_secret_arn=_match(
            env,
            "WEBHOOK_SECRET_ARN",
            _SECRET_ARN,
            "a complete Secrets Manager secret ARN (ending in its 6-character suffix)",
        ),
        alarm_topic_arn=_match(env, "ALARM_TOPIC_ARN", _TOPIC_ARN, "an SNS topic ARN"),
        event_bus_arn=_match(
            env,
            "EVENT_BUS_ARN",
            _EVENT_BUS_ARN,
            "an EventBridge event bus ARN (arn:aws:events:region:account:event-bus/name)",
        ),
        update_schedule=_match(
            env,
            "DEFINITIONS_UPDATE_SCHEDULE",
            _SCHEDULE,
            "an EventBridge schedule like rate(4 hours) or cron(0 */4 * * ? *)",
        )
        or "rate(4 hours)",
        scanner_memory_mb=_int(env, "SCANNER_MEMORY_MB", 3008, 2048, 10240),
        scanner_timeout_minutes=_int(env, "SCANNER_TIMEOUT_MINUTES", 15, 1, 15),
        scanner_ephemeral_mb=_int(env, "SCANNER_EPHEMERAL_STORAGE_MB", 6144, 1024, 10240),
        max_object_size_mb=_int(env, "MAX_OBJECT_SIZE_MB", 1024, 1, MAX_OBJECT_SIZE_MB_LIMIT),
        max_definitions_age_hours=_int(env, "MAX_DEFINITIONS_AGE_HOURS", 48, 1, 8760),
        database_mirror=_get(env, "CLAMAV_DATABASE_MIRROR") or "database.clamav.net",
        private_mirror=_get(env, "CLAMAV_PRIVATE_MIRROR"),
        scan_queue_max_concurrency=_int(env, "SCAN_QUEUE_MAX_CONCURRENCY", 5, 2, 1000),
        scanner_reserved_concurrency=_int(env, "SCANNER_RESERVED_CONCURRENCY", 50, 1, 1000),
        workflow_type=_choice(env, "WORKFLOW_TYPE", ("STANDARD", "EXPRESS"), "STANDARD"),
        express_max_object_mb=_int(env, "EXPRESS_MAX_OBJECT_MB", 256, 1, MAX_OBJECT_SIZE_MB_LIMIT),
        express_log_execution_data=_bool(env, "EXPRESS_LOG_EXECUTION_DATA", True),
        inventory_bucket_arn=_bucket_arn(env, "RESCAN_INVENTORY_BUCKET_ARN", required=False),
        retroscan_after_update_hours=_int(env, "RETROSCAN_AFTER_UPDATE_HOURS", 0, 0, 720),
        protect_source_bucket=_bool(env, "PROTECT_SOURCE_BUCKET", False),
        unscanned_readers=_principal_arns(env, "UNSCANNED_READERS"),
    )
    wave = config.scan_queue_max_concurrency * STARTER_BATCH_SIZE
    if config.scanner_reserved_concurrency < wave:
        raise DeployConfigError(
            f"SCANNER_RESERVED_CONCURRENCY must be at least SCAN_QUEUE_MAX_CONCURRENCY x "
            f"{STARTER_BATCH_SIZE} ({wave}): every execution the starters can start at once "
            f"needs a scanner, got {config.scanner_reserved_concurrency}."
        )
    for express_only in ("EXPRESS_MAX_OBJECT_MB", "EXPRESS_LOG_EXECUTION_DATA"):
        if _get(env, express_only) and config.workflow_type != "EXPRESS":
            raise DeployConfigError(
                f"{express_only} is set but WORKFLOW_TYPE is not EXPRESS (it configures the "
                "Express machine, which only WORKFLOW_TYPE=EXPRESS deploys)."
            )
    if config.unscanned_readers and not config.protect_source_bucket:
        raise DeployConfigError(
            "UNSCANNED_READERS is set but PROTECT_SOURCE_BUCKET is not true (the readers are "
            "exempted from the access gate, which only PROTECT_SOURCE_BUCKET=true attaches)."
        )
    if config.webhook_secret_arn and not config.webhook_url:
        raise DeployConfigError("WEBHOOK_SECRET_ARN is set but WEBHOOK_URL is not.")
    if config.quarantine_bucket_kms_key_arn and not config.quarantine_bucket_arn:
        raise DeployConfigError(
            "QUARANTINE_BUCKET_KMS_KEY_ARN is set but QUARANTINE_BUCKET_ARN is not."
        )
    # /tmp holds the object, up to two definitions sets (current and next), and
    # at least MaxScanSize (>= the object) twice: our unpacking and clamd's.
    needed = 3 * config.max_object_size_mb + DEFINITIONS_HEADROOM_MB
    if needed > config.scanner_ephemeral_mb:
        raise DeployConfigError(
            f"SCANNER_EPHEMERAL_STORAGE_MB must be at least 3 x MAX_OBJECT_SIZE_MB + "
            f"{DEFINITIONS_HEADROOM_MB} ({needed}) so the object, what is extracted from it "
            f"(by our unpacking and by ClamAV) and the definitions fit in /tmp, "
            f"got {config.scanner_ephemeral_mb}."
        )
    return config
