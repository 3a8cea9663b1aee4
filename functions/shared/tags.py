"""S3 object tags written by the scanner, and the rule for S3's limit of 10.

The rule, in order, when the merged set would exceed 10 tags:

1. The object's own tags are kept and our tags are set (ours replace any
   existing tag with the same key, so a rescan updates them in place).
2. Our optional tags are dropped first, last-listed first (``scan-engine``,
   then ``scan-time``, then the reason or signature).
3. ``scan-status`` is never dropped: bucket policies and downstream readers
   gate on it. If the object already carries 10 tags of its own, the ones
   that sort last by key are dropped to make room for it.

Whatever was dropped is reported (``tagsDropped``) in the action result, so
it shows in the execution history and in the audit item.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from functions.shared.contracts import Tag

S3_MAX_TAGS = 10
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
    own = [t for t in existing if t["Key"] not in ours]
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


def as_query(tags: dict[str, str]) -> str:
    """The ``Tagging`` argument of CopyObject/PutObject."""
    return urlencode({k: tag_value(v) for k, v in tags.items()})
