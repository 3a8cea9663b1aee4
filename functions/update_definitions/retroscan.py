"""The retro-scan: after new definitions are published, rescan what the old ones passed.

An object scanned clean an hour ago was scanned with signatures that knew
less than today's. With ``RETROSCAN_AFTER_UPDATE_HOURS=N``, each publish of
new definitions sends every object found clean in the previous N hours with
other definitions back to the scan queue (as S3's own records, marked with a
run id), to be scanned again with the new ones. Only ``clean`` verdicts:
infected ones are gone, and what was unscannable stays so whatever the
signatures.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from functions.record_audit.schema import BY_VERDICT_INDEX, SORT_KEY, VERDICT_KEY, from_item
from functions.shared.clock import iso_millis
from functions.shared.contracts import ObjectRef, Verdict
from functions.shared.s3event import queue_rescans


def run_id(version: str) -> str:
    """Short, and the same for every retry of one publish: its executions de-duplicate."""
    return "retro" + hashlib.sha256(version.encode()).hexdigest()[:10]


def stale_clean_objects(
    ddb: Any, table: str, source_bucket: str, version: str, since: dt.datetime
) -> list[ObjectRef]:
    """Object versions last found clean since ``since`` with definitions other than ``version``."""
    args: dict[str, Any] = {
        "TableName": table,
        "IndexName": BY_VERDICT_INDEX,
        "KeyConditionExpression": "#v = :v AND #sk >= :since",
        "ExpressionAttributeNames": {"#v": VERDICT_KEY, "#sk": SORT_KEY},
        "ExpressionAttributeValues": {
            ":v": {"S": str(Verdict.CLEAN)},
            ":since": {"S": iso_millis(since)},
        },
    }
    found: dict[tuple[str, str | None], ObjectRef] = {}
    while True:
        page = ddb.query(**args)
        for raw in page["Items"]:
            item = from_item(raw)
            if item.get("bucket") != source_bucket or item.get("definitionsVersion") == version:
                continue
            obj = ObjectRef.from_audit_item(item)
            found[(obj.key, obj.version_id or obj.etag)] = obj
        if "LastEvaluatedKey" not in page:
            return list(found.values())
        args["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def retroscan(
    ddb: Any,
    sqs: Any,
    *,
    table: str,
    queue_url: str,
    source_bucket: str,
    version: str,
    hours: float,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Queue the stale clean objects; how many, under which run id."""
    since = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(hours=hours)
    objects = stale_clean_objects(ddb, table, source_bucket, version, since)
    run = run_id(version)
    queued = queue_rescans(sqs, queue_url, objects, run)
    return {"runId": run, "queued": queued, "since": iso_millis(since)}
