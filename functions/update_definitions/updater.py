"""The scheduled updater: freshclam into a fresh directory, then publish.

The directory is seeded with the definitions already in the cache, so
freshclam downloads only the daily differences instead of the whole database
every run (ClamAV's mirrors throttle clients that re-download everything).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from functions.shared.clock import parse_iso
from functions.shared.definitions import (
    DefinitionsDoNotLoad,
    PublishResult,
    publish_directory,
    read_manifest,
    safe_extract,
    verify_loadable,
)
from functions.shared.errors import DefinitionsCorrupt, DefinitionsUpdateFailed
from functions.shared.freshclam import FreshclamFailed, FreshclamSettings, run_freshclam


@dataclass(frozen=True)
class UpdateResult:
    published: bool
    version: str
    signatures: int
    seeded_from: str | None
    age_hours: float


def _seed(s3: Any, bucket: str, prefix: str, target: Path, work: Path) -> str | None:
    """Extract the cache's current tarball into ``target``; ``None`` if there is none usable."""
    try:
        manifest = read_manifest(s3, bucket, prefix)
    except (ValueError, ClientError):
        return None  # no usable cache: freshclam starts from nothing
    if not manifest:
        return None
    tarball = work / "seed.tar"
    pinned = {"VersionId": manifest["tarballVersionId"]} if manifest.get("tarballVersionId") else {}
    try:
        s3.download_file(bucket, manifest["key"], str(tarball), ExtraArgs=pinned)
        with tarball.open("rb") as handle:  # hundreds of MB: never whole in memory
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != manifest.get("sha256"):
            return None
        safe_extract(tarball, target)
    except (DefinitionsCorrupt, KeyError, OSError, ClientError):
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True, exist_ok=True)
        return None
    finally:
        tarball.unlink(missing_ok=True)
    return str(manifest.get("version"))


def update_definitions(
    s3: Any,
    bucket: str,
    prefix: str,
    freshclam: FreshclamSettings,
    engine_version: str | None = None,
    work_root: Path | None = None,
) -> UpdateResult:
    """Run freshclam and publish; on any freshclam failure the cache is untouched."""
    with tempfile.TemporaryDirectory(dir=work_root, prefix="update-") as tmp:
        work = Path(tmp)
        databases = work / "db"
        databases.mkdir()
        seeded = _seed(s3, bucket, prefix, databases, work)
        try:
            run_freshclam(databases, freshclam)
        except FreshclamFailed as err:
            raise DefinitionsUpdateFailed(
                f"freshclam failed; the cache is unchanged. {err}"
            ) from err
        try:
            verify_loadable(databases)
        except DefinitionsDoNotLoad as err:
            raise DefinitionsUpdateFailed(
                f"the new definitions do not load; the cache is unchanged. {err}"
            ) from err
        result: PublishResult = publish_directory(s3, bucket, prefix, databases, engine_version)
    created = parse_iso(result.manifest["createdAt"])
    return UpdateResult(
        published=result.published,
        version=result.manifest["version"],
        signatures=int(result.manifest.get("signatures") or 0),
        seeded_from=seeded,
        # Since the content last changed: grows while freshclam finds nothing new.
        age_hours=round((dt.datetime.now(dt.UTC) - created).total_seconds() / 3600, 2),
    )
