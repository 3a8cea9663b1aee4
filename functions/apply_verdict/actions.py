"""Act on a verdict: tag, quarantine or delete the exact object version."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.shared.aws import CHANGED_CODES, GONE_CODES, error_code, is_transient
from functions.shared.contracts import (
    Action,
    ObjectRef,
    ScanResult,
    SkipReason,
    Tag,
    Verdict,
)
from functions.shared.errors import (
    AuditWriteFailed,
    InvalidInput,
    ObjectActionRefused,
    ObjectStoreUnavailable,
    ScannerError,
)
from functions.shared.holds import Hold, HoldStore
from functions.shared.tags import as_query, merge_tags, newer_status

log = logging.getLogger(__name__)

# HEAD cannot be answered for an SSE-C object without the customer's key
# (400), nor for one the scanner was refused (403); the unscannable tag still
# belongs on such objects, so their eTag check is skipped.
_UNREADABLE_HEAD = frozenset({"400", "BadRequest", "403", "AccessDenied"})


class ObjectGone(Exception):
    """The version was deleted between the scan and the action."""


class ObjectSuperseded(Exception):
    """Unversioned bucket: the key now holds other content than what was scanned."""


def _call(
    what: str, obj: ObjectRef, fn: Any, tolerate: frozenset = frozenset(), **kwargs: Any
) -> Any:
    """Call S3; its error codes become our named errors (``tolerate``: return None)."""
    try:
        return fn(**kwargs)
    except BotoCoreError as err:  # no connection, a read timeout: retried
        raise ObjectStoreUnavailable(f"{what} {obj.uri} failed: {err}") from err
    except ClientError as err:
        code = error_code(err)
        if code in tolerate:
            return None
        if code in GONE_CODES:
            raise ObjectGone(obj.uri) from err
        if code in CHANGED_CODES:
            raise ObjectSuperseded(obj.uri) from err
        if is_transient(err):
            raise ObjectStoreUnavailable(f"{what} {obj.uri} failed: {code}") from err
        raise ObjectActionRefused(f"{what} {obj.uri} refused: {code}: {err}") from err


def _none(reason: str) -> dict[str, Any]:
    return {"action": str(Action.NONE), "reason": reason}


# A retry looks for its copy among this many copies of the key in quarantine.
_COPIES_LOOKED_AT = 100

# Quarantine buckets (and versioning status) already warned about in this container.
_warned: set[tuple[str, str]] = set()


def forget_bucket_facts() -> None:
    """Drop what was learnt about buckets (local runs recreate them between harnesses)."""
    _warned.clear()


class VerdictApplier:
    def __init__(
        self, s3: Any, quarantine_bucket: str | None, holds: HoldStore | None = None
    ) -> None:
        self.s3 = s3
        self.quarantine_bucket = quarantine_bucket
        # Infected holds (functions/shared/holds.py); None only where no table is known.
        self.holds = holds

    def apply(self, obj: ObjectRef, scan: ScanResult, found_by: str = "") -> dict[str, Any]:
        if scan.verdict == Verdict.SKIPPED:
            return _none(scan.reason or "skipped")
        if scan.verdict not in (Verdict.CLEAN, Verdict.UNSCANNABLE, Verdict.INFECTED):
            raise InvalidInput(f"no action for verdict {scan.verdict!r}")
        try:
            self._check_current(obj, unreadable_ok=scan.verdict == Verdict.UNSCANNABLE)
            if scan.verdict == Verdict.INFECTED:
                return self._infected(obj, scan, found_by)
            # A version held infected stays infected, whatever this scan said.
            # Asked again after the tag is written: an infected finding racing
            # this one placed its hold before its tag, so either this sees the
            # hold or that tag lands after this one.
            hold = self._hold_on(obj)
            if hold is None:
                applied = self._tag(obj, self._verdict_tags(scan))
                hold = self._hold_on(obj)
            if hold is not None:
                return self._held(obj, scan, hold)
            return applied
        except ObjectSuperseded:
            return _none(str(SkipReason.SUPERSEDED))
        except ObjectGone:
            copy_version = (
                self._already_quarantined(obj) if scan.verdict == Verdict.INFECTED else None
            )
            if copy_version is not None:
                # A retry after a delete whose answer was lost: the work is done.
                return {
                    "action": str(Action.QUARANTINED),
                    "quarantine": self._quarantine_location(obj, copy_version or None),
                    "deletedVersionId": obj.version_id,
                    "recovered": True,
                }
            if scan.verdict == Verdict.INFECTED and not self.quarantine_bucket:
                # No quarantine: deleting is the whole action, and the version is
                # gone (this step's earlier attempt, whose answer was lost, or
                # someone else): what readers can get is the same.
                return {
                    "action": str(Action.DELETED),
                    "deletedVersionId": obj.version_id,
                    "recovered": True,
                    "note": "the version was already gone when this attempt came to delete it",
                }
            return _none(str(SkipReason.OBJECT_GONE))

    def _check_current(self, obj: ObjectRef, unreadable_ok: bool = False) -> None:
        """Unversioned bucket: act only if the key still holds what was scanned.

        Versioned buckets need no check: every call names the version. Between
        this check and a tag write there is a window S3 offers no condition
        for; copies and deletes carry their own If-Match.
        """
        if obj.version_id or not obj.etag:
            return
        _call(
            "HeadObject",
            obj,
            self.s3.head_object,
            tolerate=_UNREADABLE_HEAD if unreadable_ok else frozenset(),
            Bucket=obj.bucket,
            Key=obj.key,
            IfMatch=obj.quoted_etag,
        )

    def _hold_on(self, obj: ObjectRef) -> Hold | None:
        return self.holds.get(obj) if self.holds is not None else None

    def _verdict_tags(self, scan: ScanResult) -> dict[str, str]:
        tags = self._status_tags(scan)
        if scan.verdict == Verdict.UNSCANNABLE:
            # The reason matters more than time and engine: right after status.
            return {Tag.STATUS: tags.pop(Tag.STATUS), Tag.REASON: scan.reason or "unknown"} | tags
        return tags

    def _held(self, obj: ObjectRef, scan: ScanResult, hold: Hold) -> dict[str, Any]:
        """Apply a clean or unscannable verdict on a version held infected: as infected,
        with the signature that put it on hold (quarantined if it can be)."""
        log.warning("%s is held infected (%s): its %s verdict is not applied", obj.uri,
                    hold.signature, scan.verdict)  # fmt: skip
        held_scan = dataclasses.replace(scan, verdict=Verdict.INFECTED, signatures=[hold.signature])
        try:
            applied = self._infected(obj, held_scan, hold.found_by, hold=hold)
        except ScannerError as err:
            raise type(err)(
                f"{err}; the version is held infected ({hold.signature}, found {hold.found_at}), "
                f"so this scan's {scan.verdict} was not applied"
            ) from err
        return applied | {"held": hold.to_dict(), "scanVerdict": str(scan.verdict)}

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
        newer = newer_status(existing, ours[Tag.STATUS], ours.get(Tag.TIME, ""))
        if newer:
            # A later scan of this very object already said as much or worse.
            return _none(f"a newer scan tagged it {newer}") | {"newerStatus": newer}
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

    def _infected(
        self, obj: ObjectRef, scan: ScanResult, found_by: str, hold: Hold | None = None
    ) -> dict[str, Any]:
        """Hold the version infected, then quarantine (or delete) it; if that fails, it
        still says infected.

        Whatever stops the copy or the delete (a refusal, throttling that
        outlasts the retries, anything), the exact object is tagged
        ``scan-status=infected`` before the error reaches the state machine, so
        no reader mistakes it for unscanned or clean while the execution waits
        for an operator. The error's message says whether that tag landed.
        """
        signature = scan.signatures[0] if scan.signatures else "unknown"
        infected_tags = {
            Tag.STATUS: str(Verdict.INFECTED),
            Tag.SIGNATURE: signature,
            Tag.TIME: scan.scanned_at,
        }
        # The hold first: while the version exists, no later verdict may lower it.
        # A hold that cannot be written stops nothing either; it is said below.
        hold_error: AuditWriteFailed | None = None
        if self.holds is not None and hold is None:
            try:
                self.holds.place(obj, signature, scan.scanned_at, found_by)
            except AuditWriteFailed as err:
                hold_error = err
        try:
            removed = self._remove_infected(obj, scan, signature, infected_tags)
        except ScannerError as err:
            if hold_error is None:
                raise
            raise type(err)(f"{err}; and it could not be held infected ({hold_error})") from err
        # Gone from the bucket: the hold no longer matters to any reader.
        return removed | ({"holdError": str(hold_error)} if hold_error else {})

    def _remove_infected(
        self, obj: ObjectRef, scan: ScanResult, signature: str, infected_tags: dict[str, str]
    ) -> dict[str, Any]:
        if obj.version_id or not obj.etag:
            # Versioned: tag first. If the delete is refused (Object Lock, a
            # policy), the version already says it is infected to every reader.
            # A tag refused or throttled past its retries stops nothing: the
            # quarantine is what takes the version out of readers' reach.
            try:
                tagged, tag_error = self._tag(obj, infected_tags), None
            except (ObjectActionRefused, ObjectStoreUnavailable) as err:
                tagged, tag_error = {"tagsDropped": []}, err
            try:
                removed = self._copy_and_delete(obj, signature, scan)
            except ScannerError as err:
                if tag_error is None:
                    raise type(err)(f"{err}; the version is tagged scan-status=infected") from err
                raise type(err)(
                    f"{err}; the version could NOT be tagged scan-status=infected either "
                    f"({tag_error})"
                ) from err
            if tag_error is not None:
                # The version is gone from the bucket: no reader can get it, and
                # no tag can be written on it any more.
                log.warning("%s removed, though tagging it was refused: %s", obj.uri, tag_error)
                return removed | {"tagsDropped": [], "tagError": str(tag_error)}
            return removed | {"tagsDropped": tagged["tagsDropped"]}
        # Unversioned: a tag write cannot be made conditional, so tagging first
        # could label content uploaded a moment later. Copy and delete carry
        # If-Match; only when they fail is the (checked) key tagged.
        try:
            return self._copy_and_delete(obj, signature, scan)
        except ScannerError as err:
            raise type(err)(f"{err}; {self._mark_infected(obj, infected_tags)}") from err

    def _mark_infected(self, obj: ObjectRef, tags: dict[str, str]) -> str:
        """Best effort after a failed quarantine: what happened, for the error message."""
        return self._mark(obj, tags)[1]

    def _mark(self, obj: ObjectRef, tags: dict[str, str]) -> tuple[bool, str]:
        """Tag the (checked) object with ``tags``; (whether it worked, what happened)."""
        status = tags[Tag.STATUS]
        try:
            self._check_current(obj, unreadable_ok=True)
            tagged = self._tag(obj, tags)
        except ObjectSuperseded:
            return False, "the key was overwritten meanwhile, so it was not tagged"
        except ObjectGone:
            return False, "the object is gone, so it was not tagged"
        except ScannerError as err:
            log.error("could not mark %s %s: %s", obj.uri, status, err)
            return False, f"the object could NOT be tagged scan-status={status} either ({err})"
        if tagged.get("newerStatus"):
            return False, f"a newer scan had tagged it {tagged['newerStatus']}; left as it is"
        return True, f"the object is tagged scan-status={status}"

    def mark_unfinished(
        self, obj: ObjectRef, scan: dict[str, Any] | None, error: str, when: str
    ) -> dict[str, Any]:
        """After a failed execution whose verdict was never applied: say so on the object.

        Whatever the object carried is replaced (every ``scan-*`` key goes, as
        always): an infected verdict, or a version held infected, is tagged
        ``infected`` (and the verdict held); no verdict, or one whose tagging
        failed, ``scan-status=error`` with the error's name as the reason. A
        forged ``clean`` never outlives a failed scan; ``error`` never replaces
        ``infected`` or ``unscannable`` (tags.newer_status); a redrive that
        succeeds writes the real verdict over this.
        """
        verdict = (scan or {}).get("verdict")
        if verdict == Verdict.SKIPPED:
            return {"markedAs": None, "note": "skipped: there is nothing to mark"}
        hold_note, held = "", {}
        if verdict == Verdict.INFECTED:
            signature = ((scan or {}).get("signatures") or ["unknown"])[0]
            if self.holds is not None:
                try:
                    self.holds.place(obj, signature, when, "")
                except AuditWriteFailed as err:
                    hold_note = f"; it could NOT be held infected ({err})"
        else:
            hold = self._hold_on(obj)
            signature = hold.signature if hold else ""
            held = {"held": hold.to_dict()} if hold else {}
        if signature:
            tags = {Tag.STATUS: str(Verdict.INFECTED), Tag.SIGNATURE: signature, Tag.TIME: when}
        else:
            tags = {Tag.STATUS: str(Verdict.ERROR), Tag.REASON: error, Tag.TIME: when}
        marked, note = self._mark(obj, {str(k): v for k, v in tags.items()})
        note += hold_note
        return {
            "markedAs": tags[Tag.STATUS] if marked else None,
            "note": note,
            # S3 failed us (not: the object is gone or newer): worth another try.
            # (or the hold could not be placed: a later weaker scan must not win)
            "retry": (not marked and "could NOT" in note) or bool(hold_note),
        } | held

    def _copy_and_delete(self, obj: ObjectRef, signature: str, scan: ScanResult) -> dict[str, Any]:
        if not self.quarantine_bucket:
            return self._delete(obj)
        source: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key, **obj.version_args}
        condition = {} if obj.version_id or not obj.etag else {"CopySourceIfMatch": obj.quoted_etag}
        tags = {
            Tag.STATUS: str(Verdict.INFECTED),
            Tag.SIGNATURE: signature,
            Tag.SOURCE_BUCKET: obj.bucket,
            Tag.SOURCE_VERSION: obj.version_id or obj.etag or "unknown",
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
            **condition,
        )
        deleted = self._delete(obj)
        return {
            "action": str(Action.QUARANTINED),
            "quarantine": self._quarantine_location(obj, copied.get("VersionId")),
            "deletedVersionId": deleted["deletedVersionId"],
        }

    def _quarantine_location(self, obj: ObjectRef, version_id: str | None) -> dict[str, Any]:
        assert self.quarantine_bucket is not None
        return {
            "bucket": self.quarantine_bucket,
            "key": obj.key,
            "versionId": version_id,
            "bucketVersioning": self.quarantine_versioning(),
        }

    def quarantine_versioning(self) -> str:
        """``Enabled``, ``Suspended`` or ``Disabled``, read with each quarantine.

        Copies keep the source key, so only a versioned quarantine bucket keeps
        every infected version's copy: without versioning a second infected
        upload of one key overwrites the first one's evidence. That is logged
        once per container and recorded with every quarantine. Read each time
        (infected objects are few): a bucket recreated or switched since is
        recorded as it is now, not as it was.
        """
        bucket = self.quarantine_bucket
        assert bucket is not None
        try:
            status = self.s3.get_bucket_versioning(Bucket=bucket).get("Status") or "Disabled"
        except (ClientError, BotoCoreError) as err:
            log.warning("cannot read the versioning of %s: %s", bucket, err)
            return "Unknown"
        if status != "Enabled" and (bucket, status) not in _warned:
            _warned.add((bucket, status))
            log.warning(
                "quarantine bucket %s is not versioned (%s): a later infected upload of a "
                "key overwrites the earlier copy; enable versioning to keep every copy",
                bucket,
                status,
            )
        return status

    def _already_quarantined(self, obj: ObjectRef) -> str | None:
        """The copy's version id ("" if unversioned) if the quarantine holds a copy
        of *this* version (not an older one, not a later one), else None.

        Every copy under the key is looked at, newest first (a later infected
        upload of the same key may have been quarantined since), up to
        ``_COPIES_LOOKED_AT``.
        """
        if not self.quarantine_bucket:
            return None
        bucket, wanted = self.quarantine_bucket, obj.version_id or obj.etag
        try:
            listed = self.s3.list_object_versions(
                Bucket=bucket, Prefix=obj.key, MaxKeys=_COPIES_LOOKED_AT
            ).get("Versions", [])
            for copy in [v for v in listed if v["Key"] == obj.key]:
                version = copy.get("VersionId") or "null"
                args = {} if version == "null" else {"VersionId": version}
                tag_set = self.s3.get_object_tagging(Bucket=bucket, Key=obj.key, **args)
                tags = {t["Key"]: t["Value"] for t in tag_set["TagSet"]}
                if tags.get(str(Tag.SOURCE_VERSION)) == wanted:
                    return "" if version == "null" else version
        except (ClientError, BotoCoreError) as err:
            log.warning("cannot look for the quarantine copy of %s: %s", obj.uri, err)
        return None

    def _delete(self, obj: ObjectRef) -> dict[str, Any]:
        # With a VersionId the version itself is removed; without one, a
        # versioned bucket would only add a delete marker and keep the content.
        # Unversioned: delete only if the key still holds what was scanned.
        condition = {} if obj.version_id or not obj.etag else {"IfMatch": obj.quoted_etag}
        _call(
            "DeleteObject",
            obj,
            self.s3.delete_object,
            Bucket=obj.bucket,
            Key=obj.key,
            **obj.version_args,
            **condition,
        )
        return {"action": str(Action.DELETED), "deletedVersionId": obj.version_id}
