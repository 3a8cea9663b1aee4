"""Every outcome on EventBridge: one ``Object Scan Result`` event per recorded run.

Published by Record Audit (completed runs) and by the failure recorder
(failed ones), after the audit item is written, so a rule on the bus sees
exactly what the audit table holds. No state of its own: a Task for it would
cost a transition per object. At least once: a retried Record Audit publishes
again, with the same ``executionArn`` and ``redriveCount``.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.shared.errors import ResultNotPublished

SOURCE = "s3-virus-scanner"
DETAIL_TYPE = "Object Scan Result"
DEFAULT_BUS = "default"


def result_event(summary: dict[str, Any]) -> dict[str, Any]:
    """The event's detail: the run's summary, its object's fields at the top level
    (so a rule matches ``detail.bucket`` and ``detail.verdict`` directly)."""
    detail = {k: v for k, v in summary.items() if k != "object"}
    obj = summary.get("object") or {}
    for field in ("bucket", "key", "versionId", "eTag", "size"):
        detail[field] = obj.get(field)
    return detail


def publish(events: Any, bus: str, summary: dict[str, Any]) -> None:
    detail = result_event(summary)
    entry = {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPE,
        "Detail": json.dumps(detail, default=str),
        "EventBusName": bus or DEFAULT_BUS,
        "Resources": [r for r in [detail.get("executionArn")] if r],
    }
    try:
        answer = events.put_events(Entries=[entry])
    except (ClientError, BotoCoreError) as err:
        raise ResultNotPublished(f"PutEvents to {bus}: {err}") from err
    if answer.get("FailedEntryCount"):
        failed = answer["Entries"][0]
        raise ResultNotPublished(
            f"PutEvents to {bus}: {failed.get('ErrorCode')} {failed.get('ErrorMessage')}"
        )
