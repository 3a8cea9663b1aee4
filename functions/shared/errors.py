"""Named errors.

The class name of an exception raised by a handler is the error name Step Functions
sees (Lambda reports it as ``errorType``), so these names are the ``ErrorEquals``
strings in ``statemachines/scan_object.asl.json``. Rename one and you must rename it
there too; ``tests/unit/test_state_machine.py`` checks that they match.
"""


class ScannerError(Exception):
    """Base class; never raised itself."""


# Transient: retried by the state machine with backoff.
class DefinitionsUnavailable(ScannerError):
    """The definitions cache has no usable manifest or tarball right now."""


class ScanEngineUnavailable(ScannerError):
    """clamd could not be started, died, or did not answer."""


class ObjectStoreUnavailable(ScannerError):
    """S3 throttled us or failed with a server error."""


class AuditWriteFailed(ScannerError):
    """DynamoDB throttled us or failed with a server error."""


class WebhookDeliveryFailed(ScannerError):
    """The webhook answered 5xx, 408 or 429, or did not answer in time."""


class ResultNotPublished(ScannerError):
    """EventBridge refused or failed the Object Scan Result event."""


class ReconciliationIncomplete(ScannerError):
    """The scheduled reconciliation recorded what it could; some endings failed again."""


class StartExecutionThrottled(ScannerError):
    """Step Functions throttled StartExecution; the SQS record is retried."""


# Permanent: not retried, caught into the failure path.
class DefinitionsCorrupt(ScannerError):
    """The definitions tarball does not match its manifest or is unsafe to extract."""


class CachedTarballMissing(ScannerError):
    """The tarball version the manifest names cannot be fetched (gone, or access denied)."""


class ScanFailed(ScannerError):
    """ClamAV answered ERROR for this object."""


class ObjectActionRefused(ScannerError):
    """S3 refused a tag, copy or delete (Object Lock, a bucket policy, a KMS key)."""


class WebhookRejected(ScannerError):
    """The webhook answered a 4xx other than 408 and 429."""


class InvalidInput(ScannerError):
    """The step received a payload that does not follow the contract."""


class DefinitionsUpdateFailed(ScannerError):
    """The scheduled updater could not produce new definitions; the cache is untouched."""


class ConfigurationError(ScannerError):
    """An environment variable is missing or malformed."""


TRANSIENT_ERRORS = (
    DefinitionsUnavailable,
    ScanEngineUnavailable,
    ObjectStoreUnavailable,
    AuditWriteFailed,
    ResultNotPublished,
    WebhookDeliveryFailed,
)
