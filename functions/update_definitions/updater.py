"""The scheduled updater: freshclam into a fresh directory, then publish.

The directory is seeded with the definitions already in the cache, so
freshclam downloads only the daily differences instead of the whole database
every run (ClamAV's mirrors throttle clients that re-download everything).

The updater is one client of ClamAV's CDN across runs: freshclam.dat (its
client UUID and any cool-down a 429 or 403 set) is kept in the cache bucket
beside the scanners' set, restored before each run and saved after every run.
A run takes the CDN lease first (functions/shared/cdn_lease.py); during a
cool-down, its own or one a scanner's fallback received, it calls nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.shared.aws import GONE_CODES, error_code
from functions.shared.cdn_lease import CdnBusy, CdnLease, Holder, Refusal
from functions.shared.clock import iso_millis, parse_iso
from functions.shared.definitions import (
    DefinitionsDoNotLoad,
    PublishResult,
    content_digest,
    database_files,
    describe_file,
    publish_directory,
    read_manifest,
    safe_extract,
    verify_loadable,
)
from functions.shared.errors import DefinitionsCorrupt, DefinitionsUpdateFailed
from functions.shared.freshclam import (
    FRESHCLAM_DAT,
    FreshclamFailed,
    FreshclamSettings,
    is_freshclam_state,
    retry_after,
    run_freshclam,
)

log = logging.getLogger(__name__)

# Without the Lambda's remaining time: freshclam's timeout, then the test load
# and the publish.
LEASE_MARGIN_S = 600.0
# A scanner's fallback holding the lease is waited for this long (its fetch
# takes about a minute), then the run fails and Lambda's retries try again.
LEASE_WAIT_S = 120.0
LEASE_POLL_S = 5.0


@dataclass(frozen=True)
class UpdateResult:
    published: bool
    version: str | None  # the cache's set after this run (None: the cache is empty)
    signatures: int
    seeded_from: str | None
    age_hours: float | None  # since the cache's set last changed
    # ClamAV's CDN refused us (429 or 403): nothing calls it before this instant.
    cool_down_until: str | None = None

    @property
    def status(self) -> str:
        if self.published:
            return "published"
        return "cool-down" if self.cool_down_until else "unchanged"


def _seed(s3: Any, bucket: str, prefix: str, target: Path, work: Path) -> dict[str, Any] | None:
    """Extract the cache's current tarball into ``target``; its manifest, or ``None``
    if there is none usable."""
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
    return manifest


def _restore_state(s3: Any, bucket: str, key: str, directory: Path) -> None:
    """freshclam.dat from the cache bucket into freshclam's directory (none: a first
    run, and freshclam makes itself a new one)."""
    try:
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as err:
        if error_code(err) in GONE_CODES:
            return
        raise
    if is_freshclam_state(data):  # anything else, freshclam would replace anyway
        (directory / FRESHCLAM_DAT).write_bytes(data)


def _save_state(s3: Any, bucket: str, key: str, directory: Path) -> None:
    path = directory / FRESHCLAM_DAT
    if path.is_file():
        s3.put_object(
            Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType="application/octet-stream"
        )


def _take(lease: CdnLease, seconds: float, wait_s: float) -> None:
    """The lease, waiting out a scanner's fallback that holds it (not a cool-down,
    nor another run of the updater)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lease.take(seconds)
            return
        except CdnBusy as busy:
            waits = busy.why is Refusal.HELD and busy.holder != Holder.UPDATER
            if not waits or time.monotonic() + LEASE_POLL_S > deadline:
                raise
        time.sleep(LEASE_POLL_S)


def _current(
    s3: Any, bucket: str, prefix: str, cool_down_until: float | None, seeded: str | None = None
) -> UpdateResult:
    """What the cache holds, unchanged by this run."""
    try:
        manifest = read_manifest(s3, bucket, prefix)
    except (ValueError, ClientError):
        manifest = None
    return _result(manifest, False, seeded, cool_down_until)


def _result(
    manifest: dict[str, Any] | None,
    published: bool,
    seeded: str | None,
    cool_down_until: float | None,
) -> UpdateResult:
    age = None
    if manifest and manifest.get("createdAt"):
        created = parse_iso(manifest["createdAt"])
        # Since the content last changed: grows while freshclam finds nothing new.
        age = round((dt.datetime.now(dt.UTC) - created).total_seconds() / 3600, 2)
    return UpdateResult(
        published=published,
        version=str(manifest["version"]) if manifest else None,
        signatures=int((manifest or {}).get("signatures") or 0),
        seeded_from=seeded,
        age_hours=age,
        cool_down_until=(
            iso_millis(dt.datetime.fromtimestamp(cool_down_until, dt.UTC))
            if cool_down_until
            else None
        ),
    )


def update_definitions(
    s3: Any,
    bucket: str,
    prefix: str,
    freshclam: FreshclamSettings,
    engine_version: str | None = None,
    work_root: Path | None = None,
    *,
    state_key: str | None = None,
    lease: CdnLease | None = None,
    lease_seconds: float | None = None,
    lease_wait_s: float = LEASE_WAIT_S,
) -> UpdateResult:
    """Run freshclam and publish; on any freshclam failure the cache is untouched.

    ``state_key``: where freshclam.dat is kept in ``bucket`` (None: not kept).
    ``lease``: the CDN lease to hold while freshclam runs (None: uncoordinated,
    as the local tools run it). A cool-down is a result, not a failure.
    """
    if lease is not None:
        try:
            _take(lease, lease_seconds or freshclam.timeout_s + LEASE_MARGIN_S, lease_wait_s)
        except CdnBusy as busy:
            if busy.why is Refusal.COOL_DOWN:
                return _current(s3, bucket, prefix, busy.until)
            if busy.holder == Holder.UPDATER:
                # Another run of ours (the deploy's trigger and the schedule, say)
                # is fetching: its result is this run's too; not a failure.
                return _current(s3, bucket, prefix, None)
            raise DefinitionsUpdateFailed(f"{busy}; the cache is unchanged") from busy
        except (ClientError, BotoCoreError) as err:
            raise DefinitionsUpdateFailed(
                f"the CDN lease could not be taken ({error_code(err) or err}); "
                "freshclam was not run, the cache is unchanged"
            ) from err
    try:
        return _update(s3, bucket, prefix, freshclam, engine_version, work_root, state_key, lease)
    finally:
        if lease is not None:
            try:
                lease.give_back()
            except (ClientError, BotoCoreError):
                log.warning("the CDN lease could not be given back; it expires", exc_info=True)


def _update(
    s3: Any,
    bucket: str,
    prefix: str,
    freshclam: FreshclamSettings,
    engine_version: str | None,
    work_root: Path | None,
    state_key: str | None,
    lease: CdnLease | None,
) -> UpdateResult:
    with tempfile.TemporaryDirectory(dir=work_root, prefix="update-") as tmp:
        work = Path(tmp)
        databases = work / "db"
        databases.mkdir()
        seed = _seed(s3, bucket, prefix, databases, work)
        seeded = str(seed["version"]) if seed else None
        if state_key:
            _restore_state(s3, bucket, state_key, databases)
        kept = retry_after(databases)
        if kept is not None and kept.timestamp() > time.time():
            # A cool-down from an earlier run the lease item does not show (it was
            # lost, or cleared by hand): freshclam would not call the CDN either.
            if lease is not None:
                lease.cool_down(kept.timestamp(), "a 429 or 403 to the updater")
            if state_key:  # retry_after() may have cut a cool-down no CDN would set
                _save_state(s3, bucket, state_key, databases)
            return _result(seed, False, seeded, kept.timestamp())
        failed: FreshclamFailed | None = None
        try:
            run_freshclam(databases, freshclam)
        except FreshclamFailed as err:
            failed = err
        until = retry_after(databases)
        cooling = until.timestamp() if until and until.timestamp() > time.time() else None
        try:
            # The cool-down first: it is what keeps everyone off the CDN, and a
            # failed save of the file below must not lose it.
            if cooling and lease is not None:
                lease.cool_down(cooling, "a 429 or 403 to the updater")
        finally:
            if state_key:
                _save_state(s3, bucket, state_key, databases)  # after every run, failed or not
        if failed is not None:
            if cooling:
                return _result(seed, False, seeded, cooling)
            raise DefinitionsUpdateFailed(
                f"freshclam failed; the cache is unchanged. {failed}"
            ) from failed
        files = [describe_file(p) for p in database_files(databases)]
        if seed and seed.get("contentDigest") == content_digest(files):
            # freshclam succeeded and changed nothing (up to date, or a 429 it
            # reports as success): the set is the one published, nothing is new.
            return _result(seed, False, seeded, cooling)
        try:
            verify_loadable(databases)
        except DefinitionsDoNotLoad as err:
            raise DefinitionsUpdateFailed(
                f"the new definitions do not load; the cache is unchanged. {err}"
            ) from err
        result: PublishResult = publish_directory(
            s3, bucket, prefix, databases, engine_version, described=files
        )
    return _result(result.manifest, result.published, seeded, cooling)
