"""One client of ClamAV's CDN at a time, and none while it has us on cool-down.

ClamAV rate-limits cloud IPs: a 429 puts freshclam on cool-down for its
Retry-After (4 hours without one), a 403 for 24 hours. Lambda's containers
share those IPs, so the updater and every scanner's freshclam fallback take
one lease before they call the CDN: one item of the audit table
(``schema.CDN_LEASE_KEY``), written only by conditional UpdateItems.

- ``expiresAt``: the holder fetches until it gives the lease back, at the
  latest until then (a holder that dies blocks nobody for longer);
- ``coolDownUntil``: when the cool-down a 429 or 403 set ends; nobody takes
  the lease before it;
- ``lastFallbackAt``: a scanner's fallback fetches at most once per
  ``FALLBACK_SPACING_S``, all containers together. Its set serves only its own
  container; it is the updater's run that fills the cache for everyone.

Taking it is one write whose condition is all of these. Refused, DynamoDB
returns the item as it was (``ReturnValuesOnConditionCheckFailure``), which
says why and until when (``CdnBusy``).
"""

from __future__ import annotations

import datetime as dt
import enum
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from functions.record_audit.schema import CDN_LEASE_KEY, from_item
from functions.shared.aws import client, error_code
from functions.shared.clock import iso_millis
from functions.shared.freshclam import MAX_COOL_DOWN

# A scanner's fallback downloads the whole database (ClamAV's mirrors block
# clients that do that often); each container reuses its set for an hour.
FALLBACK_SPACING_S = 3600.0
# The longest cool-down believed, and so the longest any refusal is reported to last.
MAX_WAIT_S = MAX_COOL_DOWN.total_seconds()
_CONDITION_FAILED = "ConditionalCheckFailedException"


class Holder(enum.StrEnum):
    UPDATER = "updater"
    FALLBACK = "fallback"  # a scanner's freshclam fallback


class Refusal(enum.StrEnum):
    COOL_DOWN = "cool-down"
    HELD = "held"
    RECENT_FALLBACK = "recent-fallback"


class CdnBusy(Exception):
    """The lease was refused: ``why`` it was, and ``until`` when that lasts at most."""

    def __init__(self, message: str, why: Refusal, until: float, holder: str | None = None):
        super().__init__(message)
        self.why = why
        self.until = until
        self.holder = holder


def _iso(seconds: float) -> str:
    return iso_millis(dt.datetime.fromtimestamp(seconds, dt.UTC))


def _number(value: float) -> dict[str, str]:
    return {"N": f"{value:.3f}"}


class CdnLease:
    def __init__(
        self,
        ddb: Any | None,
        table: str,
        holder: Holder,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``ddb``: a DynamoDB client, or None for the container's own, built when
        first needed (a scanner's cold start does not pay for one it rarely uses)."""
        self._ddb, self.table, self.holder, self.clock = ddb, table, holder, clock
        self.owner = f"{holder}-{uuid.uuid4().hex[:12]}"

    @property
    def ddb(self) -> Any:
        return self._ddb if self._ddb is not None else client("dynamodb")

    def _update(self, update: str, condition: str, values: dict[str, Any], **extra: Any) -> None:
        self.ddb.update_item(
            TableName=self.table,
            Key={name: {"S": value} for name, value in CDN_LEASE_KEY.items()},
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeValues=values,
            **extra,
        )

    def take(self, seconds: float) -> None:
        """Hold the lease for at most ``seconds``, or raise CdnBusy."""
        now = self.clock()
        update = "SET holder = :me, holderKind = :kind, expiresAt = :expires"
        condition = (
            "(attribute_not_exists(expiresAt) OR expiresAt <= :now)"
            " AND (attribute_not_exists(coolDownUntil) OR coolDownUntil <= :now)"
        )
        values = {
            ":me": {"S": self.owner},
            ":kind": {"S": str(self.holder)},
            ":now": _number(now),
            ":expires": _number(now + seconds),
        }
        if self.holder is Holder.FALLBACK:
            update += ", lastFallbackAt = :now"
            condition += " AND (attribute_not_exists(lastFallbackAt) OR lastFallbackAt <= :since)"
            values[":since"] = _number(now - FALLBACK_SPACING_S)
        try:
            self._update(update, condition, values, ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as err:
            if error_code(err) != _CONDITION_FAILED:
                raise
            raise self._refusal(from_item(err.response.get("Item") or {}), now) from None

    def give_back(self) -> None:
        """Release the lease if this holder still has it (it may have expired)."""
        try:
            self._update(
                "REMOVE holder, holderKind, expiresAt", "holder = :me", {":me": {"S": self.owner}}
            )
        except ClientError as err:
            if error_code(err) != _CONDITION_FAILED:
                raise

    def cool_down(self, until: float, reason: str) -> None:
        """Record a cool-down ClamAV's CDN set (a later one already recorded stays)."""
        try:
            self._update(
                "SET coolDownUntil = :until, coolDownReason = :why, coolDownBy = :me",
                "attribute_not_exists(coolDownUntil) OR coolDownUntil < :until",
                {":until": _number(until), ":why": {"S": reason}, ":me": {"S": self.owner}},
            )
        except ClientError as err:
            if error_code(err) != _CONDITION_FAILED:
                raise

    @staticmethod
    def _refusal(item: dict[str, Any], now: float) -> CdnBusy:
        def seconds(name: str) -> float:
            # Nothing ClamAV or a holder sets lasts longer than MAX_WAIT_S: a damaged
            # (or hostile: the scanner's role writes this item) value is cut to it.
            try:
                value = float(item.get(name) or 0)
            except (TypeError, ValueError):
                value = now + MAX_WAIT_S
            return min(value, now + MAX_WAIT_S)

        cool_down = seconds("coolDownUntil")
        if cool_down > now:
            return CdnBusy(
                f"ClamAV's CDN has us on cool-down until {_iso(cool_down)} "
                f"({item.get('coolDownReason') or 'a 429 or 403'})",
                Refusal.COOL_DOWN,
                cool_down,
            )
        expires = seconds("expiresAt")
        if expires > now:
            holder = str(item.get("holderKind") or "")
            return CdnBusy(
                f"the {holder or 'other holder'} is fetching from ClamAV's CDN "
                f"(its lease ends by {_iso(expires)})",
                Refusal.HELD,
                expires,
                holder or None,
            )
        last = seconds("lastFallbackAt")
        return CdnBusy(
            f"a scanner's freshclam fallback fetched at {_iso(last)}; the next may at "
            f"{_iso(last + FALLBACK_SPACING_S)}",
            Refusal.RECENT_FALLBACK,
            last + FALLBACK_SPACING_S,
        )
