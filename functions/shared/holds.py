"""Infected holds: a version once found infected stays infected until an operator releases it.

A scan's verdict is only as good as its definitions. A later scan of the same
version with a weaker set (the stale-definitions fallback, a rolled-back
cache, a custom set without the signature) would say ``clean``, and a later
failed run would say ``error``; neither may lower a version we found
infected. So the finding is written down where no uploader can forge it (the
audit table, not the object's tags):

- Apply Verdict places the hold before it tags or quarantines an infected
  version (and the failure recorder does, when the run failed before that);
- every other verdict for the version (clean, unscannable) is applied as
  ``infected`` while the hold is there, with the held signature: checked
  before the tag is written and again after it, so a clean scan racing the
  infected one ends infected whichever writes last;
- ``scanctl release`` removes the hold (for a false positive), with an audit
  item of its own; a rescan then decides again.

The hold is keyed by the version (or, in an unversioned bucket, the ETag of
the content found infected), in a partition of its own (``hold#s3://b/k``):
an object's history (``s3://b/k``) never lists it, no index lists it (it has
no verdict), and the grants name its prefix (``dynamodb:LeadingKeys``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.record_audit.schema import HOLD_PREFIX, PARTITION_KEY, SORT_KEY, from_item
from functions.shared.aws import error_code
from functions.shared.clock import utc_now_iso
from functions.shared.contracts import ObjectRef
from functions.shared.errors import AuditWriteFailed


class NotHeld(Exception):
    """Release asked for a version that no hold keeps infected."""


def hold_partition(obj: ObjectRef) -> str:
    return f"{HOLD_PREFIX}{obj.uri}"


def hold_sort_key(obj: ObjectRef) -> str:
    """The version; in an unversioned bucket, the content's ETag."""
    if obj.version_id:
        return obj.version_id
    return f"etag:{(obj.etag or '').strip(chr(34))}"


@dataclass(frozen=True)
class Hold:
    """What keeps a version infected: the first finding's signature, time and run."""

    signature: str
    found_at: str
    found_by: str
    held_at: str

    def to_dict(self) -> dict[str, str]:
        return {
            "signature": self.signature,
            "foundAt": self.found_at,
            "foundBy": self.found_by,
            "heldAt": self.held_at,
        }


@dataclass
class HoldStore:
    dynamodb: Any
    table: str

    def _key(self, obj: ObjectRef) -> dict[str, Any]:
        return {PARTITION_KEY: {"S": hold_partition(obj)}, SORT_KEY: {"S": hold_sort_key(obj)}}

    def _call(self, what: str, obj: ObjectRef, fn: Any, **kwargs: Any) -> Any:
        """DynamoDB's failures as AuditWriteFailed (retried); a failed condition as it is."""
        try:
            return fn(TableName=self.table, **kwargs)
        except ClientError as err:
            if error_code(err) == "ConditionalCheckFailedException":
                raise
            raise AuditWriteFailed(f"{what} of the hold on {obj.uri}: {err}") from err
        except BotoCoreError as err:
            raise AuditWriteFailed(f"{what} of the hold on {obj.uri}: {err}") from err

    def place(self, obj: ObjectRef, signature: str, found_at: str, found_by: str) -> Hold:
        """Hold the version infected; the first finding stays (a retry changes nothing)."""
        hold = Hold(signature, found_at, found_by, utc_now_iso())
        values = {name: {"S": value or "unknown"} for name, value in hold.to_dict().items()}
        try:
            self._call(
                "PutItem",
                obj,
                self.dynamodb.put_item,
                Item=self._key(obj) | values,
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
            )
        except ClientError:  # the condition: held already, by an earlier finding
            return self.get(obj) or hold
        return hold

    def get(self, obj: ObjectRef) -> Hold | None:
        item = self._call(
            "GetItem", obj, self.dynamodb.get_item, Key=self._key(obj), ConsistentRead=True
        ).get("Item")
        return _hold(item) if item else None

    def release(self, obj: ObjectRef) -> Hold:
        """Remove the hold; the hold that was there (NotHeld when there was none)."""
        try:
            answer = self._call(
                "DeleteItem",
                obj,
                self.dynamodb.delete_item,
                Key=self._key(obj),
                ConditionExpression="attribute_exists(#pk)",
                ExpressionAttributeNames={"#pk": PARTITION_KEY},
                ReturnValues="ALL_OLD",
            )
        except ClientError as err:  # ConditionalCheckFailed
            raise NotHeld(f"no hold keeps {obj.uri} ({hold_sort_key(obj)}) infected") from err
        return _hold(answer["Attributes"])


def _hold(item: dict[str, Any]) -> Hold:
    plain = from_item(item)
    text = lambda name: str(plain.get(name) or "unknown")  # noqa: E731
    return Hold(text("signature"), text("foundAt"), text("foundBy"), text("heldAt"))
