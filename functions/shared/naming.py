"""Deterministic Step Functions execution names.

The same object version always gets the same name, so a redelivered SQS
message cannot start a second scan (StartExecution answers
ExecutionAlreadyExists). Step Functions allows 80 characters from
``[A-Za-z0-9_-]``; the name starts with a readable slice of the key and ends
with a hash of what identifies the version.
"""

from __future__ import annotations

import hashlib
import re

from functions.shared.contracts import ObjectRef

MAX_LENGTH = 80
_HASH_LENGTH = 32
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def _readable(text: str, room: int) -> str:
    tail = text.rsplit("/", 1)[-1] or text
    slug = _UNSAFE.sub("_", tail).strip("_-")
    return slug[-room:].lstrip("_-") if room > 0 else ""


def execution_name(obj: ObjectRef, prefix: str = "", salt: str = "") -> str:
    """``[prefix-]<key slice>-<hash>`` for one object version.

    The hash covers bucket, key and the version's identity: its versionId, or
    for unversioned buckets the event's sequencer (each overwrite has a new
    one), or failing both its eTag; and ``salt``, which tells apart several
    scans of one version that must each run (restores, rescans).
    """
    identity = obj.version_id or obj.sequencer or obj.etag or ""
    parts = (obj.bucket, obj.key, identity, salt) if salt else (obj.bucket, obj.key, identity)
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:_HASH_LENGTH]
    head = _UNSAFE.sub("_", prefix).strip("_-")[:24]
    head = f"{head}-" if head else ""
    room = MAX_LENGTH - len(head) - _HASH_LENGTH - 1
    slug = _readable(obj.key, room)
    name = f"{head}{slug}-{digest}" if slug else f"{head}{digest}"
    return name[:MAX_LENGTH]


def rescan_execution_name(obj: ObjectRef, run_id: str) -> str:
    """A rescan's execution, apart from the upload's; the run id in the hash too: the
    name keeps only its first characters, and two runs alike there must not share."""
    return execution_name(obj, prefix=f"rescan-{run_id}", salt=run_id)
