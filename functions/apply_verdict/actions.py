"""Act on a verdict: tag, quarantine or delete the exact object version."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from functions.shared.aws import error_code, is_transient
from functions.shared.contracts import Action, ObjectRef, ScanResult, Tag, Verdict
from functions.shared.errors import InvalidInput, ObjectStoreUnavailable
from functions.shared.tags import as_query, merge_tags

_GONE_CODES = {"404", "NoSuchKey", "NoSuchVersion", "NotFound"}


class ObjectGone(Exception):
    """The version was deleted between the scan and the action."""


def _call(what: str, obj: ObjectRef, fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except ClientError as err:
        code = error_code(err)
        if code in _GONE_CODES:
            raise ObjectGone(obj.uri) from err
        if is_transient(err):
            raise ObjectStoreUnavailable(f"{what} {obj.uri} failed: {code}") from err
        raise


class VerdictApplier:
    def __init__(self, s3: Any, quarantine_bucket: str | None) -> None:
        self.s3 = s3
        self.quarantine_bucket = quarantine_bucket

    def apply(self, obj: ObjectRef, scan: ScanResult) -> dict[str, Any]:
        try:
            if scan.verdict == Verdict.CLEAN:
                return self._tag(obj, self._status_tags(scan))
            if scan.verdict == Verdict.UNSCANNABLE:
                tags = self._status_tags(scan)
                # The reason matters more than time and engine: put it right after status.
                ordered = {Tag.STATUS: tags.pop(Tag.STATUS), Tag.REASON: scan.reason or "unknown"}
                return self._tag(obj, ordered | tags)
            if scan.verdict == Verdict.INFECTED:
                if self.quarantine_bucket:
                    return self._quarantine(obj, scan)
                return self._delete(obj)
            if scan.verdict == Verdict.SKIPPED:
                return {"action": str(Action.NONE), "reason": scan.reason}
        except ObjectGone:
            return {"action": str(Action.NONE), "reason": "object-gone"}
        raise InvalidInput(f"no action for verdict {scan.verdict!r}")

    @staticmethod
    def _status_tags(scan: ScanResult) -> dict[str, str]:
        # Most important first: merge_tags drops from the end when S3's limit is hit.
        return {
            Tag.STATUS: str(scan.verdict),
            Tag.TIME: scan.scanned_at,
            Tag.ENGINE: scan.engine_label,
        }

    def _tag(self, obj: ObjectRef, ours: dict[str, str]) -> dict[str, Any]:
        existing = _call(
            "GetObjectTagging",
            obj,
            self.s3.get_object_tagging,
            Bucket=obj.bucket,
            Key=obj.key,
            **obj.version_args,
        )["TagSet"]
        merged = merge_tags(existing, {str(k): v for k, v in ours.items()})
        _call(
            "PutObjectTagging",
            obj,
            self.s3.put_object_tagging,
            Bucket=obj.bucket,
            Key=obj.key,
            Tagging={"TagSet": merged.tags},
            **obj.version_args,
        )
        return {
            "action": str(Action.TAGGED),
            "tags": {t["Key"]: t["Value"] for t in merged.tags if t["Key"] in set(map(str, Tag))},
            "tagsDropped": merged.dropped,
        }

    def _quarantine(self, obj: ObjectRef, scan: ScanResult) -> dict[str, Any]:
        source = {"Bucket": obj.bucket, "Key": obj.key, **obj.version_args}
        tags = {
            Tag.STATUS: str(Verdict.INFECTED),
            Tag.SIGNATURE: scan.signatures[0] if scan.signatures else "unknown",
            Tag.SOURCE_BUCKET: obj.bucket,
            Tag.TIME: scan.scanned_at,
        }
        copied = _call(
            "CopyObject",
            obj,
            self.s3.copy_object,
            CopySource=source,
            Bucket=self.quarantine_bucket,
            Key=obj.key,
            # Metadata and content type come along; the source's tags do not.
            MetadataDirective="COPY",
            TaggingDirective="REPLACE",
            Tagging=as_query({str(k): v for k, v in tags.items()}),
        )
        deleted = self._delete(obj)
        return {
            "action": str(Action.QUARANTINED),
            "quarantine": {
                "bucket": self.quarantine_bucket,
                "key": obj.key,
                "versionId": copied.get("VersionId"),
            },
            "deletedVersionId": deleted["deletedVersionId"],
        }

    def _delete(self, obj: ObjectRef) -> dict[str, Any]:
        # With a VersionId the version itself is removed; without one, a
        # versioned bucket would only add a delete marker and keep the content.
        _call(
            "DeleteObject",
            obj,
            self.s3.delete_object,
            Bucket=obj.bucket,
            Key=obj.key,
            **obj.version_args,
        )
        return {"action": str(Action.DELETED), "deletedVersionId": obj.version_id}
