"""Which definitions a scan must use, from the cache manifest."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from botocore.exceptions import ClientError

from functions.shared.aws import error_code, is_transient
from functions.shared.clock import parse_iso
from functions.shared.contracts import DefinitionsRef, DefinitionsSource
from functions.shared.definitions import keys
from functions.shared.errors import DefinitionsUnavailable


def current_definitions(
    s3: Any, bucket: str, prefix: str, max_age_hours: float, now: dt.datetime | None = None
) -> DefinitionsRef:
    """The manifest's definitions, checked: readable, complete, tarball present.

    Raises DefinitionsUnavailable (retried, then the fallback path) otherwise.
    Stale definitions are still returned, flagged ``stale``: scanning with old
    signatures beats not scanning, and the flag travels to the audit and webhook.
    """
    tarball_key, manifest_key = keys(prefix)
    where = f"s3://{bucket}/{manifest_key}"
    try:
        body = s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
    except ClientError as err:
        raise DefinitionsUnavailable(
            f"no definitions manifest at {where} ({error_code(err)})"
        ) from err
    try:
        manifest = json.loads(body)
        version = str(manifest["version"])
        sha256 = str(manifest["sha256"])
        created = parse_iso(str(manifest["createdAt"]))
        key = str(manifest.get("key") or tarball_key)
        tarball_version = manifest.get("tarballVersionId")
        pinned = {"VersionId": str(tarball_version)} if tarball_version else {}
    except (ValueError, KeyError, TypeError) as err:
        raise DefinitionsUnavailable(
            f"definitions manifest at {where} is unreadable: {err}"
        ) from err
    try:
        head = s3.head_object(Bucket=bucket, Key=key, **pinned)
    except ClientError as err:
        if is_transient(err):
            raise DefinitionsUnavailable(f"cache throttled: {error_code(err)}") from err
        raise DefinitionsUnavailable(
            f"manifest {where} names s3://{bucket}/{key}, which is missing"
        ) from err
    now = now or dt.datetime.now(dt.UTC)
    age_hours = max(0.0, (now - created).total_seconds() / 3600)
    return DefinitionsRef(
        source=str(DefinitionsSource.CACHE),
        version=version,
        bucket=bucket,
        key=key,
        sha256=sha256,
        size=int(head["ContentLength"]),
        created_at=manifest["createdAt"],
        age_hours=round(age_hours, 2),
        stale=age_hours > max_age_hours,
        tarball_version_id=pinned.get("VersionId"),
    )
