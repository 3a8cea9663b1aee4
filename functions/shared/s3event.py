"""S3 event notifications as they arrive in an SQS message body."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from functions.shared.clock import utc_now_iso
from functions.shared.contracts import ObjectRef, TriggerSource
from functions.shared.errors import InvalidInput, ObjectStoreUnavailable
from functions.shared.naming import execution_name, rescan_execution_name

TEST_EVENT = "s3:TestEvent"
# A restored archived object: readable now, so it is scanned now (its upload's
# scan could only call it unscannable/archived).
RESTORE_COMPLETED = "ObjectRestore:Completed"


# Rescans (the Rescan state machine, the retro-scan) send S3's own record
# shape, with this marker: the execution is named and triggered apart.
RESCAN_EVENT = "ObjectCreated:Rescan"


@dataclass(frozen=True)
class ObjectCreated:
    object: ObjectRef
    event_time: str | None
    event_name: str
    rescan_run: str | None = None

    @property
    def is_restore(self) -> bool:
        return self.event_name == RESTORE_COMPLETED

    @property
    def execution_name(self) -> str:
        """Deterministic per event: a redelivery maps to the same execution.

        A restore scans a version its upload already saw (as archived), so
        its name differs from the upload's; the event time tells one restore
        of a version from a later one, and the run id one rescan from another.
        """
        if self.is_restore:
            return execution_name(self.object, prefix="restored", salt=self.event_time or "")
        if self.rescan_run:
            return rescan_execution_name(self.object, self.rescan_run)
        return execution_name(self.object)


@dataclass
class ParsedBody:
    """One SQS body's records, each on its own: a bad one never blocks a good one."""

    created: list[ObjectCreated] = field(default_factory=list)
    # S3 records of other events (ObjectRemoved, ObjectTagging...): not ours to scan.
    ignored: list[str] = field(default_factory=list)
    # Records that are not S3 notifications at all (forged, corrupted, empty key).
    invalid: list[str] = field(default_factory=list)


def parse_body(body: str) -> ParsedBody:
    """The records of one SQS body; none for S3's test event.

    Raises InvalidInput only when the body as a whole is not an S3 notification
    (its SQS record then fails alone, and reaches the DLQ after the queue's
    retries). Each record is taken on its own: ObjectCreated (and restores)
    are ``created``, other S3 events ``ignored``, malformed ones ``invalid``.
    """
    try:
        message = json.loads(body)
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"body is not JSON: {str(body)[:200]!r}") from err
    if not isinstance(message, dict):
        raise InvalidInput("body is not an S3 event notification (not a JSON object)")
    parsed = ParsedBody()
    if message.get("Event") == TEST_EVENT:
        return parsed
    records = message.get("Records")
    if not isinstance(records, list) or not records:
        raise InvalidInput("body is not an S3 event notification (no Records)")
    for index, record in enumerate(records):
        try:
            parsed.created.append(_parse_record(record))
        except NotObjectCreated as other:
            parsed.ignored.append(str(other))
        except InvalidInput as err:
            parsed.invalid.append(f"record {index}: {err}")
    return parsed


class NotObjectCreated(Exception):
    """An S3 record of an event this scanner does not scan for."""


def _parse_record(record: object) -> ObjectCreated:
    if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
        raise InvalidInput("record is not an S3 event record")
    event_name = str(record.get("eventName", ""))
    if not event_name:
        raise InvalidInput("S3 record names no event")
    if not (event_name.startswith("ObjectCreated:") or event_name == RESTORE_COMPLETED):
        raise NotObjectCreated(event_name)
    try:
        s3 = record["s3"]
        bucket = s3["bucket"]["name"]
        raw = s3["object"]
        # S3 form-encodes keys in notifications: '+' is a space, '%2B' a plus.
        key = unquote_plus(raw["key"])
    except (KeyError, TypeError) as err:
        raise InvalidInput(f"S3 record lacks {err}") from err
    if not isinstance(bucket, str) or not bucket or not key:
        # S3 has no object without a key: a forged or corrupted record.
        raise InvalidInput("S3 record names no bucket or an empty key")
    size = raw.get("size")
    scanner = record.get("scanner") if isinstance(record.get("scanner"), dict) else {}
    rescan_run = str(scanner.get("rescanRun") or "") or None
    return ObjectCreated(
        rescan_run=rescan_run,
        object=ObjectRef(
            bucket=bucket,
            key=key,
            # "null" is the version id of objects written while versioning was off
            # or suspended: it is overwritten in place, so it pins nothing.
            version_id=None if raw.get("versionId") in (None, "", "null") else raw["versionId"],
            size=int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
            etag=raw.get("eTag") or None,
            sequencer=raw.get("sequencer") or None,
        ),
        event_time=record.get("eventTime"),
        event_name=event_name,
    )


def execution_input(event: ObjectCreated, message_id: str) -> dict:
    trigger = {
        "source": str(TriggerSource.RESCAN if event.rescan_run else TriggerSource.S3_EVENT),
        "eventName": event.event_name,
        "eventTime": event.event_time,
        "messageId": message_id,
    }
    if event.rescan_run:
        trigger["runId"] = event.rescan_run
    return {"object": event.object.to_dict(), "trigger": trigger}


SQS_BATCH = 10  # SendMessageBatch's most


def queue_rescans(sqs: Any, queue_url: str, objects: list[ObjectRef], run_id: str) -> int:
    """Send each object to the scan queue as a rescan of run ``run_id``; how many.

    A batch's failed entries are sent again (five tries); what the queue still
    refuses is ObjectStoreUnavailable, for the caller's retry. A message sent
    twice names the same execution, so a retry starts nothing twice.
    """
    now = utc_now_iso()
    for start in range(0, len(objects), SQS_BATCH):
        entries = [
            {"Id": str(i), "MessageBody": rescan_message(obj, run_id, now)}
            for i, obj in enumerate(objects[start : start + SQS_BATCH])
        ]
        for _ in range(5):
            answer = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            failed = {f["Id"] for f in answer.get("Failed", [])}
            entries = [e for e in entries if e["Id"] in failed]
            if not entries:
                break
        else:
            raise ObjectStoreUnavailable(f"the scan queue refused {len(entries)} messages")
    return len(objects)


def rescan_message(obj: ObjectRef, run_id: str, event_time: str) -> str:
    """The body S3 would send for this object, marked as a rescan of run ``run_id``."""
    raw: dict = {"key": quote_plus(obj.key, safe="/"), "size": obj.size, "eTag": obj.etag}
    if obj.version_id:
        raw["versionId"] = obj.version_id
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "eventTime": event_time,
                    "eventName": RESCAN_EVENT,
                    "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": obj.bucket}, "object": raw},
                    "scanner": {"rescanRun": run_id},
                }
            ]
        }
    )
