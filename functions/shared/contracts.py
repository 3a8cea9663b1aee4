"""The contracts between the steps, defined once.

The execution state grows key by key as the steps run (each step writes its
result under its own ``ResultPath``)::

    {"object": {...}, "trigger": {...},
     "definitions": {...}, "scan": {...}, "action": {...},
     "audit": {...}, "notification": {...}, "error": {...}}

Only pointers and small summaries travel in the state: Step Functions caps a
payload at 256 KB.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

from functions.shared.errors import InvalidInput

# Signature names kept in a payload; an archive can match thousands.
MAX_SIGNATURES = 20


class Verdict(enum.StrEnum):
    CLEAN = "clean"
    INFECTED = "infected"
    UNSCANNABLE = "unscannable"
    SKIPPED = "skipped"
    ERROR = "error"  # written by the failure path only


class UnscannableReason(enum.StrEnum):
    TOO_LARGE = "too-large"
    ENCRYPTED = "encrypted"
    LIMITS_EXCEEDED = "limits-exceeded"
    # In an archive storage class (Glacier Flexible Retrieval, Deep Archive, or
    # an Intelligent-Tiering archive tier) and not restored: it cannot be read
    # until someone restores it, and the restore's event brings it back here.
    ARCHIVED = "archived"
    # S3 or KMS refused the scanner the content (403, a KMS key it may not use).
    ACCESS_DENIED = "access-denied"
    # An archive (or compressed stream) whose members could not all be read:
    # damaged, truncated, or a method neither ClamAV nor libarchive reads.
    ARCHIVE_UNREADABLE = "archive-unreadable"
    # A container neither ClamAV nor our readers open (a squashfs or WIM image,
    # a file system image): its bytes were scanned, what it stores was not.
    UNSUPPORTED_FORMAT = "unsupported-format"
    # clamd died reading it, twice: a poison object (a parser bug, a crash
    # ClamAV would hit on every try); never clean, and no more cold restarts.
    ENGINE_CRASH = "engine-crash"


class Engine(enum.StrEnum):
    """Which pass found what a scan reports."""

    CLAMAV = "clamav"  # clamd on the object, with ClamAV's own unpacking
    UNPACK = "unpack"  # clamd on what our libarchive unpacking extracted


class SkipReason(enum.StrEnum):
    OBJECT_GONE = "object-gone"
    FOLDER_MARKER = "folder-marker"
    # Unversioned bucket: the key was overwritten since the event; the newer
    # object has its own event and its own scan.
    SUPERSEDED = "superseded"


class Action(enum.StrEnum):
    TAGGED = "tagged"
    QUARANTINED = "quarantined"
    DELETED = "deleted"
    NONE = "none"


# Actions after which the scanned version is gone from the source bucket: a scan
# from scratch would find nothing and call it skipped.
REMOVING_ACTIONS = frozenset({Action.QUARANTINED, Action.DELETED})


class TriggerSource(enum.StrEnum):
    S3_EVENT = "s3-event"
    RESCAN = "rescan"
    MANUAL = "manual"


class DefinitionsSource(enum.StrEnum):
    CACHE = "cache"
    FRESHCLAM = "freshclam"


class Tag(enum.StrEnum):
    """Tag keys this scanner writes. Values come from the scan result."""

    STATUS = "scan-status"
    TIME = "scan-time"
    ENGINE = "scan-engine"
    REASON = "scan-reason"
    SIGNATURE = "scan-signature"
    SOURCE_BUCKET = "scan-source-bucket"
    # On the quarantine copy: which source version (or eTag) it is a copy of.
    SOURCE_VERSION = "scan-source-version"


def _require(data: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (isinstance(value, str) and not value):
        raise InvalidInput(f"{where}.{name} must be a non-empty {kind.__name__}, got {value!r}")
    return value


@dataclass(frozen=True)
class ObjectRef:
    """One exact object version in S3."""

    bucket: str
    key: str
    version_id: str | None = None
    size: int | None = None
    etag: str | None = None
    sequencer: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def version_args(self) -> dict[str, str]:
        """Extra boto3 arguments that pin the exact version, when there is one."""
        return {"VersionId": self.version_id} if self.version_id else {}

    @property
    def pin_args(self) -> dict[str, str]:
        """Arguments that make a read refer to exactly this object.

        Versioned buckets: the version id. Unversioned buckets: ``IfMatch`` on
        the event's eTag, so an overwrite since the event answers 412 instead of
        silently handing us different content.
        """
        if self.version_id:
            return {"VersionId": self.version_id}
        if self.etag:
            return {"IfMatch": self.quoted_etag}
        return {}

    @property
    def quoted_etag(self) -> str:
        etag = (self.etag or "").strip('"')
        return f'"{etag}"'

    @classmethod
    def from_dict(cls, data: Any) -> ObjectRef:
        if not isinstance(data, dict):
            raise InvalidInput(f"object must be a JSON object, got {data!r}")
        size = data.get("size")
        if size is not None and (not isinstance(size, int) or size < 0):
            raise InvalidInput(f"object.size must be a non-negative integer, got {size!r}")
        return cls(
            bucket=_require(data, "bucket", str, "object"),
            key=_require(data, "key", str, "object"),
            # "null" names the version written while versioning was off: it is
            # overwritten in place, so it pins nothing.
            version_id=None if data.get("versionId") in (None, "", "null") else data["versionId"],
            size=size,
            etag=data.get("eTag") or None,
            sequencer=data.get("sequencer") or None,
        )

    @classmethod
    def from_audit_item(cls, item: dict[str, Any]) -> ObjectRef:
        """The object an audit item (deserialized) records a scan of."""
        size = item.get("objectSize")
        return cls(
            bucket=str(item["bucket"]),
            key=str(item["key"]),
            version_id=item.get("versionId") or None,
            size=int(size) if size is not None else None,
            etag=item.get("eTag") or None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "versionId": self.version_id,
            "size": self.size,
            "eTag": self.etag,
            "sequencer": self.sequencer,
        }


@dataclass(frozen=True)
class DefinitionsRef:
    """Which definitions a scan must use (the result of Fetch Definitions)."""

    source: str
    version: str | None = None
    bucket: str | None = None
    key: str | None = None
    sha256: str | None = None
    size: int | None = None
    created_at: str | None = None
    age_hours: float | None = None
    stale: bool = False
    tarball_version_id: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> DefinitionsRef:
        if not isinstance(data, dict):
            raise InvalidInput(f"definitions must be a JSON object, got {data!r}")
        source = data.get("source", DefinitionsSource.CACHE)
        if source not in set(DefinitionsSource):
            raise InvalidInput(f"definitions.source must be one of {list(DefinitionsSource)}")
        if source == DefinitionsSource.CACHE:
            for name in ("version", "bucket", "key", "sha256"):
                _require(data, name, str, "definitions")
        return cls(
            source=source,
            version=data.get("version"),
            bucket=data.get("bucket"),
            key=data.get("key"),
            sha256=data.get("sha256"),
            size=data.get("size"),
            created_at=data.get("createdAt"),
            age_hours=data.get("ageHours"),
            stale=bool(data.get("stale", False)),
            tarball_version_id=data.get("tarballVersionId"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "version": self.version,
            "bucket": self.bucket,
            "key": self.key,
            "sha256": self.sha256,
            "size": self.size,
            "createdAt": self.created_at,
            "ageHours": self.age_hours,
            "stale": self.stale,
            "tarballVersionId": self.tarball_version_id,
        }


@dataclass(frozen=True)
class ScanResult:
    """What Scan Object returns."""

    verdict: Verdict
    scanned_at: str
    reason: str | None = None
    signatures: list[str] = field(default_factory=list)
    engine: str | None = None
    definitions_version: str | None = None
    definitions_stale: bool = False
    bytes_scanned: int = 0
    duration_ms: int = 0
    # Which pass found the signatures (or why it is unscannable), when not clean.
    found_by: str | None = None
    # What our unpacking did (archives, members, bytes, rescanned), for archives.
    unpacked: dict[str, int] | None = None
    # Unversioned bucket: the eTag of what was scanned, when the key had been
    # overwritten since its event (the newer content is what got scanned).
    scanned_etag: str | None = None
    # An object sent without a version id (a rescan of listed objects) in a
    # versioned bucket: the version the scan read, which every later step acts on.
    scanned_version_id: str | None = None

    @property
    def engine_label(self) -> str:
        """The value of the scan-engine tag: ``ClamAV <engine>/<definitions>``."""
        return f"ClamAV {self.engine or 'unknown'}/{self.definitions_version or 'unknown'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "reason": self.reason,
            "signatures": self.signatures[:MAX_SIGNATURES],
            "engine": self.engine,
            "definitionsVersion": self.definitions_version,
            "definitionsStale": self.definitions_stale,
            "scannedAt": self.scanned_at,
            "bytesScanned": self.bytes_scanned,
            "durationMs": self.duration_ms,
            "foundBy": self.found_by,
            "unpacked": self.unpacked,
            "scannedETag": self.scanned_etag,
            "scannedVersionId": self.scanned_version_id,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ScanResult:
        if not isinstance(data, dict):
            raise InvalidInput(f"scan must be a JSON object, got {data!r}")
        try:
            verdict = Verdict(data.get("verdict"))
        except ValueError as err:
            raise InvalidInput(f"scan.verdict {data.get('verdict')!r} is not a verdict") from err
        return cls(
            verdict=verdict,
            scanned_at=_require(data, "scannedAt", str, "scan"),
            reason=data.get("reason"),
            signatures=list(data.get("signatures") or []),
            engine=data.get("engine"),
            definitions_version=data.get("definitionsVersion"),
            definitions_stale=bool(data.get("definitionsStale", False)),
            bytes_scanned=int(data.get("bytesScanned") or 0),
            duration_ms=int(data.get("durationMs") or 0),
            found_by=data.get("foundBy"),
            unpacked=data.get("unpacked"),
            scanned_etag=data.get("scannedETag"),
            scanned_version_id=data.get("scannedVersionId"),
        )

    def applies_to(self, obj: ObjectRef) -> ObjectRef:
        """The object this verdict is about: the event's, or (unversioned, overwritten
        since its event) the newer content that was scanned instead."""
        return scanned_object(obj, self.scanned_version_id, self.scanned_etag)


def scanned_object(
    obj: ObjectRef, scanned_version_id: str | None, scanned_etag: str | None
) -> ObjectRef:
    """``ScanResult.applies_to`` for a scan known only as fields (a failed run's state)."""
    if obj.version_id:
        return obj
    if scanned_version_id:
        return ObjectRef(obj.bucket, obj.key, scanned_version_id, obj.size, obj.etag, obj.sequencer)
    if scanned_etag:
        return ObjectRef(obj.bucket, obj.key, None, obj.size, scanned_etag, obj.sequencer)
    return obj


@dataclass(frozen=True)
class ExecutionRef:
    """The Step Functions execution a step runs in (from the context object)."""

    arn: str
    name: str
    start_time: str
    # How many times the console's Redrive (RedriveExecution) resumed it.
    redrive_count: int = 0

    @classmethod
    def from_dict(cls, data: Any) -> ExecutionRef:
        if not isinstance(data, dict):
            raise InvalidInput(f"execution must be a JSON object, got {data!r}")
        redrives = data.get("redriveCount") or 0
        if not isinstance(redrives, int) or redrives < 0:
            raise InvalidInput(f"execution.redriveCount must be a count, got {redrives!r}")
        return cls(
            arn=_require(data, "id", str, "execution"),
            name=_require(data, "name", str, "execution"),
            start_time=_require(data, "startTime", str, "execution"),
            redrive_count=redrives,
        )


def state_event(event: Any) -> tuple[dict[str, Any], ExecutionRef]:
    """The payload of Record Audit, Record Failure and Notify Webhook:
    ``{"state": <the whole execution state>, "execution": {id, name, startTime}}``.
    """
    state = event.get("state") if isinstance(event, dict) else None
    if not isinstance(state, dict):
        raise InvalidInput("state must be the execution state object")
    return state, ExecutionRef.from_dict(event.get("execution"))


def result_summary(state: dict[str, Any], execution: ExecutionRef) -> dict[str, Any]:
    """The story of one object in one flat document.

    Both the audit item and the webhook body are built from this, so the two
    never disagree about what happened.
    """
    obj = ObjectRef.from_dict(state.get("object"))
    scan = state.get("scan") or {}
    action = state.get("action") or {}
    definitions = state.get("definitions") or {}
    error = state.get("error")
    # A failure after ClamAV answered keeps that answer as the verdict (an
    # infected object whose webhook failed is still listed as infected) and is
    # marked ``failed``; ``error`` is the verdict only when none was reached.
    verdict = scan.get("verdict") or Verdict.ERROR
    signatures = list(scan.get("signatures") or [])[:MAX_SIGNATURES]
    # (``held`` in the state: a failed run whose object the failure recorder
    # marked infected by its hold.)
    held = action.get("held") or state.get("held")
    if held:
        # A version held infected (functions/shared/holds.py) was acted on as
        # infected: that is its verdict; what this scan said is kept beside it.
        verdict, signatures = Verdict.INFECTED, [str(held.get("signature"))]
    summary: dict[str, Any] = {
        "object": obj.to_dict(),
        "verdict": str(verdict),
        "reason": scan.get("reason"),
        "signatures": signatures,
        "action": action.get("action", str(Action.NONE)),
        "quarantine": action.get("quarantine"),
        "deletedVersionId": action.get("deletedVersionId"),
        "tagsDropped": list(action.get("tagsDropped") or []),
        "definitionsVersion": scan.get("definitionsVersion") or definitions.get("version"),
        "definitionsSource": definitions.get("source"),
        "definitionsStale": bool(scan.get("definitionsStale", definitions.get("stale", False))),
        "engine": scan.get("engine"),
        "scannedAt": scan.get("scannedAt"),
        "scanDurationMs": scan.get("durationMs"),
        "foundBy": scan.get("foundBy"),
        "scannedETag": scan.get("scannedETag"),
        "scannedVersionId": scan.get("scannedVersionId"),
        "trigger": state.get("trigger") or {},
        "executionArn": execution.arn,
        "executionName": execution.name,
        "executionStartTime": execution.start_time,
        "redriveCount": execution.redrive_count,
    }
    if held:
        summary["held"] = held
        summary["scanVerdict"] = scan.get("verdict")
    summary["failed"] = bool(error)
    if error:
        summary["error"] = describe_error(error)
    return summary


def describe_error(error: Any) -> dict[str, str]:
    """Step Functions' caught error ({"Error", "Cause"}) in a small, stable form.

    For a Lambda error the Cause is Lambda's JSON (errorMessage, errorType,
    stackTrace); only the message is kept.
    """
    if not isinstance(error, dict):
        return {"error": "Unknown", "cause": str(error)[:1000]}
    cause = str(error.get("Cause", ""))
    try:
        parsed = json.loads(cause)
        if isinstance(parsed, dict) and "errorMessage" in parsed:
            cause = str(parsed["errorMessage"])
    except ValueError:
        pass
    return {"error": str(error.get("Error", "Unknown")), "cause": cause[:1000]}
