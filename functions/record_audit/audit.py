"""The audit table: one item per execution.

Key: ``object`` (``s3://bucket/key``) and ``scanId``
(``<execution start time>#<execution name>``), so one object's history reads
in time order with a single Query, and the same execution recorded twice
(a retry, a redrive) overwrites its own item instead of adding one. The
``by-verdict`` index (``verdict``, ``scanId``) lists recent scans by verdict.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from functions.record_audit.schema import FAILURE_KEY, PARTITION_KEY, SORT_KEY
from functions.shared.aws import error_code, is_transient
from functions.shared.clock import normalize_iso, utc_now_iso
from functions.shared.contracts import ExecutionRef, result_summary
from functions.shared.errors import AuditWriteFailed

_serializer = TypeSerializer()


def scan_id(execution: ExecutionRef) -> str:
    """One per execution: a redrive (same start time, same name) rewrites its item."""
    return f"{normalize_iso(execution.start_time)}#{execution.name}"


def build_item(state: dict[str, Any], execution: ExecutionRef) -> dict[str, Any]:
    summary = result_summary(state, execution)
    obj = summary.pop("object")
    item = {
        PARTITION_KEY: f"s3://{obj['bucket']}/{obj['key']}",
        SORT_KEY: scan_id(execution),
        "bucket": obj["bucket"],
        "key": obj["key"],
        "versionId": obj["versionId"],
        "objectSize": obj["size"],
        "eTag": obj["eTag"],
        "recordedAt": utc_now_iso(),
        **summary,
    }
    if summary.get("failed"):
        item[FAILURE_KEY] = "failed"
    # DynamoDB wants Decimal, not float; and no empty strings in key attributes.
    return json.loads(json.dumps(item), parse_float=Decimal)


def write_item(
    dynamodb: Any, table: str, item: dict[str, Any], unless_newer: bool = False
) -> dict[str, str]:
    """Put the item; with ``unless_newer``, only if no later redrive has written it.

    The failure recorder runs asynchronously: its notice of a failed run can
    arrive after a redrive already finished. A redrive's item carries a higher
    ``redriveCount`` and must not be overwritten by the older failure.
    """
    condition: dict[str, Any] = {}
    if unless_newer:
        condition = {
            "ConditionExpression": "attribute_not_exists(#sk) OR attribute_not_exists(#rc) "
            "OR #rc <= :rc",
            "ExpressionAttributeNames": {"#sk": SORT_KEY, "#rc": "redriveCount"},
            "ExpressionAttributeValues": {":rc": {"N": str(item.get("redriveCount") or 0)}},
        }
    try:
        dynamodb.put_item(
            TableName=table,
            Item={k: _serializer.serialize(v) for k, v in item.items() if v is not None},
            **condition,
        )
    except ClientError as err:
        if error_code(err) == "ConditionalCheckFailedException":
            return {
                "table": table,
                PARTITION_KEY: item[PARTITION_KEY],
                SORT_KEY: item[SORT_KEY],
                "superseded": "a later redrive recorded this execution",
            }
        if is_transient(err):
            raise AuditWriteFailed(f"audit write throttled: {error_code(err)}") from err
        raise AuditWriteFailed(f"audit write failed: {error_code(err)}: {err}") from err
    return {"table": table, PARTITION_KEY: item[PARTITION_KEY], SORT_KEY: item[SORT_KEY]}
