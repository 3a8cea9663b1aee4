"""Which listed objects a rescan sends to the scan queue, and sending them.

The Rescan state machine lists the source bucket (a Distributed Map over
ListObjectsV2, or over an S3 Inventory manifest) and hands this a batch of
listed objects. Modes:

- ``all``: every object (no request per object: a listing carries no version
  id, and the scanner pins the current version when it HEADs the object);
- ``unscanned``: objects without a finished scan of ours (``clean``, ``infected`` or
  ``unscannable`` with its ``scan-time``): never scanned, or a failed run (``error``);
- ``outdated``: those, and objects whose last scan is older than
  ``scannedBefore`` or used other definitions than ``definitionsVersion``.

The two filtering modes read each object's tags (one GetObjectTagging, which
also names the current version), and skip an object only if the audit table
holds the scan those tags describe (one Query); an object whose tags S3
refuses to show is sent to the scanner, which records what it can read. A listed item's fields
are read whatever their case (the ListObjectsV2 reader says ``Etag``), and
an S3 Inventory row's URL-encoded key is decoded. Selected objects go to the scan queue as
the records S3 itself sends, marked with the run id, so rescans flow through
the one ingest path, its concurrency limits and its de-duplication; their
executions are named ``rescan-<run id>-...``, apart from the upload's.
"""

from __future__ import annotations

import enum
import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.record_audit.schema import PARTITION_KEY, from_item
from functions.shared import access_gate
from functions.shared.aws import GONE_CODES, error_code, is_denied, is_transient
from functions.shared.clock import parse_iso
from functions.shared.contracts import ObjectRef, Tag, Verdict
from functions.shared.errors import InvalidInput, ObjectStoreUnavailable
from functions.shared.s3event import queue_rescans


class Mode(enum.StrEnum):
    ALL = "all"
    UNSCANNED = "unscanned"
    OUTDATED = "outdated"


@dataclass(frozen=True)
class Request:
    bucket: str
    run_id: str
    mode: Mode
    scanned_before: str | None = None
    definitions_version: str | None = None
    # "inventory" when the items are S3 Inventory rows (URL-encoded keys).
    listing: str = "list"

    @classmethod
    def from_dict(cls, data: Any) -> Request:
        if not isinstance(data, dict):
            raise InvalidInput("BatchInput must be an object")
        try:
            mode = Mode(data.get("mode") or "all")
        except ValueError as err:
            raise InvalidInput(f"mode must be one of {[str(m) for m in Mode]}") from err
        bucket, run_id = data.get("bucket"), data.get("runId")
        if not bucket or not run_id:
            raise InvalidInput("BatchInput needs bucket and runId")
        before = data.get("scannedBefore") or None
        if before:
            parse_iso(str(before))  # refuses what is not a time
        return cls(
            str(bucket),
            str(run_id),
            mode,
            before,
            data.get("definitionsVersion") or None,
            str(data.get("listing") or "list"),
        )


@dataclass
class Outcome:
    listed: int = 0
    queued: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    tags_trusted: bool | None = None  # None: the mode (all) reads no tags

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "queued": self.queued,
            "skipped": self.skipped,
            "tagsTrusted": self.tags_trusted,
        }


def _field(item: dict[str, Any], name: str) -> Any:
    """A listed item's field, whatever its case: Step Functions' ListObjectsV2 reader
    says ``Etag``, boto3 ``ETag``, an S3 Inventory header ``ETag`` or ``eTag``."""
    wanted = name.lower()
    return next((v for k, v in item.items() if k.lower() == wanted), None)


def listed_object(bucket: str, item: dict[str, Any], inventory: bool = False) -> ObjectRef:
    """A ListObjectsV2 entry, or an S3 Inventory row, as an object reference.

    Inventory CSV keys are URL-encoded; a listing's are not.
    """
    key = _field(item, "Key")
    if not key:
        raise InvalidInput(f"listed item without a key: {item!r}")
    if inventory:
        key = urllib.parse.unquote_plus(str(key))
    size = _field(item, "Size")
    version = _field(item, "VersionId") or None
    return ObjectRef(
        bucket=str(_field(item, "Bucket") or bucket),
        key=str(key),
        version_id=None if version in (None, "", "null") else str(version),
        size=int(size) if str(size or "").isdigit() else None,
        etag=str(_field(item, "ETag") or "").strip('"') or None,
    )


class Selector:
    def __init__(
        self,
        s3: Any,
        sqs: Any,
        queue_url: str,
        source_bucket: str,
        dynamodb: Any = None,
        audit_table: str | None = None,
    ) -> None:
        self.s3, self.sqs, self.queue_url, self.source = s3, sqs, queue_url, source_bucket
        self.dynamodb, self.audit_table = dynamodb, audit_table
        self._tags_trusted: bool | None = None

    def tags_trusted(self) -> bool:
        """Whether the source bucket's policy holds the access gate (read once).

        Without it an uploader can write ``scan-status=clean`` and a ``scan-time``
        itself, so the filtering modes cannot take a tag's word: they rescan all.
        """
        if self._tags_trusted is None:
            try:
                text = self.s3.get_bucket_policy(Bucket=self.source)["Policy"]
                self._tags_trusted = access_gate.applied(json.loads(text))
            except ClientError as err:
                if is_transient(err):
                    raise ObjectStoreUnavailable(f"GetBucketPolicy: {error_code(err)}") from err
                if error_code(err) != "NoSuchBucketPolicy" and not is_denied(err):
                    raise
                self._tags_trusted = False
            except BotoCoreError as err:
                raise ObjectStoreUnavailable(f"GetBucketPolicy: {err}") from err
        return self._tags_trusted

    def run(self, request: Request, items: list[dict[str, Any]]) -> Outcome:
        if request.bucket != self.source:
            raise InvalidInput(f"rescans scan only the source bucket {self.source!r}")
        outcome = Outcome()
        chosen: list[ObjectRef] = []
        for item in items:
            outcome.listed += 1
            obj = listed_object(request.bucket, item, request.listing == "inventory")
            if obj.key.endswith("/") and not obj.size:
                outcome.skip("folder-marker")
                continue
            picked = self.pick(request, obj)
            if picked is None:  # (only a filtering mode declines; a gone object too)
                outcome.skip("up-to-date")
                continue
            chosen.append(picked)
        outcome.tags_trusted = self._tags_trusted
        # The Map retries a batch the queue refused; nothing starts twice.
        outcome.queued = queue_rescans(self.sqs, self.queue_url, chosen, request.run_id)
        return outcome

    def pick(self, request: Request, obj: ObjectRef) -> ObjectRef | None:
        """The object (its version pinned when the tags name it) if the mode wants it."""
        if request.mode == Mode.ALL or not self.tags_trusted():
            return obj
        try:
            answer = self.s3.get_object_tagging(Bucket=obj.bucket, Key=obj.key, **obj.version_args)
        except ClientError as err:
            if error_code(err) in GONE_CODES:
                return None
            if is_transient(err):
                raise ObjectStoreUnavailable(
                    f"GetObjectTagging {obj.uri}: {error_code(err)}"
                ) from err
            # Refused (a policy, a KMS key): its tags are unknown, so scan it; the
            # scanner records what it can or cannot read. One such object never
            # stops the run.
            return obj
        except BotoCoreError as err:
            raise ObjectStoreUnavailable(f"GetObjectTagging {obj.uri}: {err}") from err
        tags = {t["Key"]: t["Value"] for t in answer.get("TagSet", [])}
        version = answer.get("VersionId")
        if version and version != "null" and not obj.version_id:
            obj = ObjectRef(obj.bucket, obj.key, version, obj.size, obj.etag)
        if _wanted(request, tags) or not self.recorded(obj, tags):
            return obj
        return None

    def recorded(self, obj: ObjectRef, tags: dict[str, str]) -> bool:
        """Whether the newest finished scan the audit table holds of this version
        (or, unversioned, this eTag) is the one these tags describe.

        The gate stops new forgeries, not a ``clean`` an uploader wrote before it
        was applied: a tag counts only if one of our scans wrote it. Newest first,
        a few pages at most; not found is rescanned (never skipped on a guess).
        """
        if not self.audit_table or not (obj.version_id or obj.etag):
            return False
        names = {f"#a{i}": name for i, name in enumerate(_AUDIT_FIELDS)}
        args: dict[str, Any] = {
            "TableName": self.audit_table,
            "KeyConditionExpression": "#pk = :pk",
            # Only what the comparison reads: items carry signatures, triggers, errors.
            "ProjectionExpression": ", ".join(names),
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY, **names},
            "ExpressionAttributeValues": {":pk": {"S": obj.uri}},
            "ScanIndexForward": False,
        }
        for _ in range(_AUDIT_PAGES):
            try:
                response = self.dynamodb.query(**args)
            except ClientError as err:
                if is_transient(err):
                    raise ObjectStoreUnavailable(f"audit query: {error_code(err)}") from err
                raise
            except BotoCoreError as err:
                raise ObjectStoreUnavailable(f"audit query: {err}") from err
            for raw in response.get("Items", []):
                item = from_item(raw)
                if not item.get("failed") and _same_content(item, obj):
                    # The newest finished scan of this content: the tags must be its.
                    return _describes(item, tags)
            if "LastEvaluatedKey" not in response:
                return False
            args["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return False


_AUDIT_PAGES = 3
_AUDIT_FIELDS = (
    "failed",
    "verdict",
    "scannedAt",
    "definitionsVersion",
    "versionId",
    "scannedVersionId",
    "eTag",
    "scannedETag",
)


def _same_content(item: dict[str, Any], obj: ObjectRef) -> bool:
    if obj.version_id:
        return obj.version_id in (item.get("versionId"), item.get("scannedVersionId"))
    return obj.etag in (item.get("eTag"), item.get("scannedETag"))


def _describes(item: dict[str, Any], tags: dict[str, str]) -> bool:
    """Did this scan write these tags: its verdict, its time, and its definitions
    when the engine tag is there (the tag budget may have left it out; an
    infected verdict has none)?"""
    if item.get("verdict") != tags.get(Tag.STATUS) or item.get("scannedAt") != tags.get(Tag.TIME):
        return False
    engine = tags.get(Tag.ENGINE)
    return engine is None or engine.endswith(f"/{item.get('definitionsVersion')}")


# What a finished scan of ours leaves: one of these, with the time it ran.
_VERDICT_STATUSES = {str(Verdict.CLEAN), str(Verdict.INFECTED), str(Verdict.UNSCANNABLE)}


def _wanted(request: Request, tags: dict[str, str]) -> bool:
    # Exactly the keys we write: a differently cased key is nobody's verdict.
    status, when = tags.get(Tag.STATUS), tags.get(Tag.TIME)
    if status not in _VERDICT_STATUSES or not when:
        # Never scanned, a failed run (error), or a status that is not a verdict of
        # ours: every filtering mode wants it.
        return True
    if request.mode == Mode.UNSCANNED:
        return False
    if request.scanned_before and _before(when, request.scanned_before):
        return True
    engine = tags.get(Tag.ENGINE, "")
    wanted_version = request.definitions_version
    return bool(wanted_version) and not engine.endswith(f"/{wanted_version}")


def _before(when: str, limit: str) -> bool:
    try:
        return parse_iso(when) < parse_iso(limit)
    except ValueError:
        return True  # an unreadable time is not proof of a recent scan
