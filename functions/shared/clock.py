"""UTC timestamps as the contracts write them: ISO 8601 with a ``Z``."""

from __future__ import annotations

import datetime as dt


def utc_now_iso(timespec: str = "seconds") -> str:
    """``2026-11-27T12:00:00Z`` (or with ``.123`` for ``timespec="milliseconds"``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(text: str) -> dt.datetime:
    """The inverse, accepting ``Z`` or an offset."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
