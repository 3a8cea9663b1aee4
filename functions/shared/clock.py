"""UTC timestamps as the contracts write them: ISO 8601 with a ``Z``."""

from __future__ import annotations

import datetime as dt


def utc_now_iso(timespec: str = "seconds") -> str:
    """``2026-11-27T12:00:00Z`` (or with ``.123`` for ``timespec="milliseconds"``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    """The inverse, accepting ``Z`` or an offset."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso_millis(moment: dt.datetime) -> str:
    """``2026-11-27T12:00:00.123Z``: one spelling of an instant, to the millisecond."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalize_iso(text: str) -> str:
    """Any ISO 8601 spelling of an instant as ``iso_millis`` spells it.

    Step Functions hands the execution's start time to a task as an ISO
    string and to EventBridge as epoch milliseconds; keys built from either
    must be equal.
    """
    return iso_millis(parse_iso(text))


def from_epoch_millis(millis: int | float) -> str:
    return iso_millis(dt.datetime.fromtimestamp(millis / 1000, dt.UTC))
