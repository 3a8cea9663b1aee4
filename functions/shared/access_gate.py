"""The access gate: bucket-policy statements that make ``scan-status=clean`` a guarantee.

Defined once; the stack attaches them (``PROTECT_SOURCE_BUCKET=true``) and
``scanctl policy`` prints or merges them. Three statements, each a Deny (a
Deny wins over any Allow, in any policy of the account):

1. ``ReadOnlyWhenClean``: ``s3:GetObject`` and ``s3:GetObjectVersion`` are
   denied unless the object's ``scan-status`` tag is ``clean``. A missing tag
   counts as not clean (``StringNotEquals`` matches when the key is absent),
   so an object is unreadable from its upload until its scan says clean, and
   forever if it is infected, unscannable or its scan failed. The scanner's
   own roles and ``UNSCANNED_READERS`` (admins, replication) are exempt.
2. ``NoScanTagsFromOthers``: no request may carry a ``scan-*`` tag key, at
   upload (``s3:PutObject`` with ``x-amz-tagging``) or later (the tagging
   actions), except from the roles that write our tags. Nobody can forge
   ``scan-status=clean``, not even an exempt reader.
3. ``OnlyTheScannerTags``: every other tag write or delete is denied too,
   except to our tagging roles and ``UNSCANNED_READERS``: nobody can strip an
   ``infected`` tag from a version Object Lock keeps. The price: uploads that
   carry tags of their own (S3 authorizes those as ``s3:PutObjectTagging``)
   must come from an exempt principal.
4. ``NoCopiesFromElsewhere``: a copy from another bucket into this one is
   denied to everyone but our tagging roles: a copy brings its source's tags
   along by default, which no condition key shows, so it could carry a forged
   ``scan-status=clean`` in.

``scan-*`` is refused in every spelling (``Scan-``, ``SCAN-``...): S3 tag keys
and ``StringLike`` are case-sensitive, a reader may not be. ``"Principal": "*"``
also covers service principals (CloudFront, say), which ``{"AWS": "*"}`` may not.

Principals are matched by ``aws:PrincipalArn``, which for a role is the role's
ARN (not the assumed-role session's), so Lambda execution roles match.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from functions.shared.contracts import Tag, Verdict
from functions.shared.tags import OUR_PREFIX

SID_PREFIX = "S3VirusScanner"
READ_SID = f"{SID_PREFIX}ReadOnlyWhenClean"
SCAN_TAGS_SID = f"{SID_PREFIX}NoScanTagsFromOthers"
TAGGING_SID = f"{SID_PREFIX}OnlyTheScannerTags"
COPY_SID = f"{SID_PREFIX}NoCopiesFromElsewhere"
SIDS = (READ_SID, SCAN_TAGS_SID, TAGGING_SID, COPY_SID)

# StringLike is case-sensitive and S3 tag keys are too, while a reader (or a
# condition key's tag part) may not be: refuse every spelling of the prefix.
SCAN_KEY_PATTERNS = sorted(
    "".join(spelling) + OUR_PREFIX[4:] + "*"
    for spelling in itertools.product(*((c.lower(), c.upper()) for c in OUR_PREFIX[:4]))
)

READ_ACTIONS = ["s3:GetObject", "s3:GetObjectVersion"]
TAG_WRITE_ACTIONS = ["s3:PutObjectTagging", "s3:PutObjectVersionTagging"]
TAG_DELETE_ACTIONS = ["s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"]


def bucket_name(bucket: str) -> str:
    """The name in ``arn:aws:s3:::name`` (a CDK token is returned as it is)."""
    return bucket.rsplit(":", 1)[-1] if bucket.startswith("arn:") else bucket


def bucket_arn(bucket: str) -> str:
    """``arn:aws:s3:::name`` for a bucket name; an ARN is kept."""
    return bucket if bucket.startswith("arn:") else f"arn:aws:s3:::{bucket}"


def statements(
    bucket: str,
    *,
    scanner_roles: Sequence[str],
    tagging_roles: Sequence[str],
    unscanned_readers: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """The gate's statements for ``bucket`` (a name or an ARN).

    ``scanner_roles``: every role of ours that reads objects (the scanner,
    apply_verdict for the quarantine copy and its eTag checks, the failure
    recorder). ``tagging_roles``: the roles that write our tags.
    """
    if not scanner_roles or not tagging_roles:
        raise ValueError("the gate needs the scanner's reading and tagging roles")
    objects = f"{bucket_arn(bucket)}/*"
    name = bucket_name(bucket)
    readers = [*scanner_roles, *unscanned_readers]
    taggers = [*tagging_roles, *unscanned_readers]
    return [
        {
            "Sid": READ_SID,
            "Effect": "Deny",
            "Principal": "*",
            "Action": READ_ACTIONS,
            "Resource": objects,
            "Condition": {
                "StringNotEquals": {f"s3:ExistingObjectTag/{Tag.STATUS}": str(Verdict.CLEAN)},
                "ArnNotLike": {"aws:PrincipalArn": _unique(readers)},
            },
        },
        {
            "Sid": SCAN_TAGS_SID,
            "Effect": "Deny",
            "Principal": "*",
            "Action": ["s3:PutObject", *TAG_WRITE_ACTIONS],
            "Resource": objects,
            "Condition": {
                "ForAnyValue:StringLike": {"s3:RequestObjectTagKeys": SCAN_KEY_PATTERNS},
                "ArnNotLike": {"aws:PrincipalArn": _unique(tagging_roles)},
            },
        },
        {
            "Sid": TAGGING_SID,
            "Effect": "Deny",
            "Principal": "*",
            "Action": [*TAG_WRITE_ACTIONS, *TAG_DELETE_ACTIONS],
            "Resource": objects,
            "Condition": {"ArnNotLike": {"aws:PrincipalArn": _unique(taggers)}},
        },
        {
            "Sid": COPY_SID,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": objects,
            "Condition": {
                # A copy brings its source's tags along (TaggingDirective COPY, the
                # default), and no condition key sees those: a copy from another
                # bucket could carry a forged scan-status=clean in, even for an
                # exempt principal. Copies within this bucket carry our own tags.
                "Null": {"s3:x-amz-copy-source": "false"},
                "StringNotLike": {"s3:x-amz-copy-source": [f"{name}/*", f"/{name}/*"]},
                "ArnNotLike": {"aws:PrincipalArn": _unique(tagging_roles)},
            },
        },
    ]


def applied(policy: dict[str, Any] | None) -> bool:
    """Whether the bucket policy holds every statement of the gate (by ``Sid``).

    Only then can a ``scan-*`` tag be trusted to be ours: without the gate,
    anyone who may upload may also write ``scan-status=clean``.
    """
    present = {s.get("Sid") for s in (policy or {}).get("Statement", []) if isinstance(s, dict)}
    return set(SIDS) <= present


def merge(policy: dict[str, Any] | None, ours: list[dict[str, Any]]) -> dict[str, Any]:
    """``policy`` with our statements added or replaced by ``Sid``; the others kept.

    Idempotent: merging into a policy that already holds these statements
    returns an equal document.
    """
    policy = dict(policy or {"Version": "2012-10-17", "Statement": []})
    existing = policy.get("Statement") or []
    if isinstance(existing, dict):
        existing = [existing]
    by_sid = {s["Sid"]: s for s in ours}
    merged: list[dict[str, Any]] = []
    for statement in existing:
        sid = statement.get("Sid")
        if sid in by_sid:
            merged.append(by_sid.pop(sid))  # replaced in place: order stays
        else:
            merged.append(statement)
    merged.extend(s for s in ours if s["Sid"] in by_sid)
    policy["Version"] = policy.get("Version") or "2012-10-17"
    policy["Statement"] = merged
    return policy


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))
