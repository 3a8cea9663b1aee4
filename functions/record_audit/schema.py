"""The audit table's keys and indexes, defined once.

The stack's ``Audit`` construct and the local harness both build the table
from this, so the table the tests write to is the one that is deployed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

PARTITION_KEY = "object"  # s3://bucket/key
SORT_KEY = "scanId"  # <execution start time>#<execution name>
VERDICT_KEY = "verdict"
# Sparse: only failed runs carry this attribute, so its index lists exactly them.
FAILURE_KEY = "failure"
BY_VERDICT_INDEX = "by-verdict"
FAILURES_INDEX = "failures"

# Not an audit item: the lease on ClamAV's CDN (functions/shared/cdn_lease.py),
# kept here so the updater and every scanner share it. Its partition key cannot
# be an object's (those are s3:// URIs), has no verdict or failure (no index
# lists it), and the roles may write only this key (dynamodb:LeadingKeys).
CDN_LEASE_PARTITION = "lease#clamav-cdn"
CDN_LEASE_KEY = {PARTITION_KEY: CDN_LEASE_PARTITION, SORT_KEY: "lease"}

# Not audit items either: infected holds (functions/shared/holds.py), one per
# version found infected, in partitions ``hold#s3://bucket/key`` that no
# object's history and no index lists; Apply Verdict may touch only these.
HOLD_PREFIX = "hold#"


@dataclass(frozen=True)
class Index:
    name: str
    partition_key: str
    sort_key: str


INDEXES = (
    # Recent scans by verdict.
    Index(BY_VERDICT_INDEX, VERDICT_KEY, SORT_KEY),
    # Failed runs, newest first.
    Index(FAILURES_INDEX, FAILURE_KEY, SORT_KEY),
)


def create_table_arguments(table_name: str) -> dict[str, Any]:
    """DynamoDB CreateTable arguments (on-demand), for emulated tables."""
    attributes = {PARTITION_KEY, SORT_KEY} | {
        key for index in INDEXES for key in (index.partition_key, index.sort_key)
    }
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"} for name in sorted(attributes)
        ],
        "KeySchema": [
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": index.name,
                "KeySchema": [
                    {"AttributeName": index.partition_key, "KeyType": "HASH"},
                    {"AttributeName": index.sort_key, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in INDEXES
        ],
    }


_deserialize = TypeDeserializer().deserialize


def from_item(raw: dict[str, Any]) -> dict[str, Any]:
    """An audit item as DynamoDB returns it, in plain values."""
    return {k: _deserialize(v) for k, v in raw.items()}
