"""S3 object tags written by the scanner, and the rule for S3's limit of 10.

The rule, in order:

1. Every ``scan-*`` key already on the object is removed, whoever wrote it:
   an uploader's forged ``scan-status=clean`` or ``scan-reason``, or what an
   earlier scan left (a rescan from unscannable to clean drops the old
   ``scan-reason``). Only what this scan writes carries the prefix afterwards.
2. The object's other tags are kept and ours are added. When the merged set
   would exceed 10 tags:
3. Our optional tags are dropped first, last-listed first (``scan-engine``,
   then ``scan-time``, then the reason or signature).
4. ``scan-status`` is never dropped: bucket policies and downstream readers
   gate on it. If the object already carries 10 tags of its own, the ones
   that sort last by key are dropped to make room for it.

Whatever was dropped is reported (``tagsDropped``) in the action result, so
it shows in the execution history and in the audit item.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlencode

from functions.shared.clock import parse_iso
from functions.shared.contracts import Tag, Verdict

S3_MAX_TAGS = 10
# Every tag key this scanner writes starts with this; nobody else's may.
OUR_PREFIX = "scan-"
S3_MAX_VALUE_LENGTH = 256
_ALLOWED_VALUE_CHARS = set(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 +-=._:/@"
)


def tag_value(text: str) -> str:
    """S3 tag values allow letters, digits, spaces and ``+ - = . _ : / @``."""
    cleaned = "".join(ch if ch in _ALLOWED_VALUE_CHARS else "_" for ch in text)
    return cleaned[:S3_MAX_VALUE_LENGTH]


@dataclass(frozen=True)
class MergedTags:
    tags: list[dict[str, str]]
    dropped: list[str]


def merge_tags(existing: list[dict[str, str]], ours: dict[str, str]) -> MergedTags:
    """Merge our tags (status first, most important first) into the existing set."""
    if Tag.STATUS not in ours:
        raise ValueError("our tags must include scan-status")
    own = [t for t in existing if not is_ours(t["Key"])]
    ordered_ours = [(k, v) for k, v in ours.items()]
    dropped: list[str] = []
    # Drop our optional tags, least important (last) first.
    while len(own) + len(ordered_ours) > S3_MAX_TAGS and len(ordered_ours) > 1:
        dropped.append(ordered_ours.pop()[0])
    # Only the status tag is left of ours; make room for it if we must.
    if len(own) + len(ordered_ours) > S3_MAX_TAGS:
        keep = S3_MAX_TAGS - len(ordered_ours)
        by_key = sorted(own, key=lambda t: t["Key"])
        dropped.extend(t["Key"] for t in by_key[keep:])
        kept = {t["Key"] for t in by_key[:keep]}
        own = [t for t in own if t["Key"] in kept]
    merged = own + [{"Key": k, "Value": tag_value(v)} for k, v in ordered_ours]
    return MergedTags(tags=merged, dropped=dropped)


# How much a status restricts readers: a write may never lower it on behalf of
# an older scan (a redrive of a stale execution, a late failure notice).
_SEVERITY = {
    str(Verdict.CLEAN): 1,
    str(Verdict.UNSCANNABLE): 2,
    str(Verdict.ERROR): 2,
    str(Verdict.INFECTED): 3,
}


def newer_status(existing: list[dict[str, str]], status: str, scanned_at: str) -> str | None:
    """The object's status, if ours must not replace it; else None.

    - ``infected`` is always written (an infected version stays infected by
      its hold, functions/shared/holds.py, not by its tag, which an uploader
      can forge);
    - ``error`` (a failed run) never replaces ``infected`` or ``unscannable``,
      however old: a failure says nothing about the content;
    - otherwise a status a newer scan wrote, at least as severe as ours, stays:
      an older scan (a stale execution redriven late, say) never turns a newer
      ``infected`` into ``clean``. A newer but milder status is still replaced
      (failing closed).
    """
    tags = {t["Key"]: t["Value"] for t in existing}
    current, when = tags.get(Tag.STATUS), tags.get(Tag.TIME)
    if status == Verdict.INFECTED or current not in _SEVERITY:
        return None
    if status == Verdict.ERROR and current in (Verdict.INFECTED, Verdict.UNSCANNABLE):
        return current
    if not when:
        return None
    try:
        newer = _moment(when) > _moment(scanned_at)
    except ValueError:
        return None
    return current if newer and _SEVERITY[current] >= _SEVERITY.get(status, 0) else None


def _moment(text: str) -> dt.datetime:
    moment = parse_iso(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def is_ours(key: str) -> bool:
    """A key in our namespace: removed from every object before we write ours."""
    return key.lower().startswith(OUR_PREFIX)


def as_query(tags: dict[str, str]) -> str:
    """The ``Tagging`` argument of CopyObject/PutObject."""
    return urlencode({k: tag_value(v) for k, v in tags.items()})
