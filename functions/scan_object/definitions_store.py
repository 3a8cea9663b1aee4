"""Definitions on the scanner's local disk: download, verify, extract, prune.

Each version lives in ``<work>/defs/<version>/``. At most the loaded version
and the one being switched to are kept, so a long-lived container does not
fill its ephemeral storage with old databases.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from functions.shared.aws import error_code, is_transient
from functions.shared.cdn_lease import CdnLease
from functions.shared.contracts import DefinitionsRef, DefinitionsSource
from functions.shared.definitions import (
    content_digest,
    database_files,
    describe_file,
    safe_extract,
)
from functions.shared.errors import (
    CachedTarballMissing,
    DefinitionsCorrupt,
    DefinitionsUnavailable,
    ObjectStoreUnavailable,
)
from functions.shared.freshclam import (
    FreshclamFailed,
    FreshclamSettings,
    retry_after,
    run_freshclam,
)

log = logging.getLogger(__name__)

FRESHCLAM_REUSE_S = 3600.0
# The fallback holds the CDN lease for freshclam's timeout and this much more.
LEASE_MARGIN_S = 60.0
# The tarball comes as ranged GETs of RANGE_BYTES, PARALLEL_RANGES at a time, read
# in order (AWS's guidance for large GETs: 8-16 MB ranges on concurrent connections;
# one connection is commonly reported at 80-100 MB/s, and the official set is ~220 MB).
RANGE_BYTES = 8 * 1024 * 1024
PARALLEL_RANGES = 4
_SAFE_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def _download_error(err: ClientError | BotoCoreError, uri: str) -> Exception:
    """A failed download as the named error the state machine acts on."""
    if isinstance(err, ClientError) and not is_transient(err):
        return CachedTarballMissing(f"definitions tarball {uri} unavailable ({error_code(err)})")
    return ObjectStoreUnavailable(f"definitions download of {uri} failed: {err}")  # retried


class CacheFilled(Exception):
    """The fallback found the cache filled once it held the lease: it fetched nothing."""


class _Digesting:
    """A read-once stream from S3 that hashes what passes through it.

    A download that breaks off surfaces here, while the tarball is being read:
    it leaves as the named error (botocore's timeouts are OSErrors, which the
    extraction would otherwise take for an unreadable tarball).
    """

    def __init__(self, raw: Any, uri: str) -> None:
        self.raw, self.uri = raw, uri
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        try:
            chunk = self.raw.read(size)
        except (ClientError, BotoCoreError) as err:
            raise _download_error(err, self.uri) from err
        self.digest.update(chunk)
        self.size += len(chunk)
        return chunk

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class _RangedBody:
    """One version of an object as a read-once stream, fetched as ranged GETs.

    Up to ``parallel`` ranges are in flight ahead of the reader, so memory stays
    at about ``(parallel + 1) * chunk`` whatever the size. Only for a pinned version: ranges
    of an object overwritten mid-download would mix two contents. Each range is
    held as pieces of ``PIECE_BYTES``: one 8 MiB buffer per range, freed, would
    make glibc keep such buffers in its arenas (its mmap threshold follows the
    largest block freed), and the container would keep ~70 MiB it no longer uses.
    """

    PIECE_BYTES = 256 * 1024

    def __init__(
        self, s3: Any, pinned: dict[str, str], size: int, chunk: int, parallel: int
    ) -> None:
        self._s3, self._pinned, self._size, self._chunk = s3, pinned, size, chunk
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="defs-range")
        self._parallel = parallel
        self._pending: deque[Future[list[bytes]]] = deque()
        self._offset = 0  # where the next range to request starts
        self._pieces: deque[bytes] = deque()

    def _fill(self) -> None:
        while len(self._pending) < self._parallel and self._offset < self._size:
            end = min(self._offset + self._chunk, self._size) - 1
            self._pending.append(self._pool.submit(self._get, self._offset, end))
            self._offset = end + 1

    def _get(self, start: int, end: int) -> list[bytes]:
        response = self._s3.get_object(Range=f"bytes={start}-{end}", **self._pinned)
        with response["Body"] as body:
            pieces = list(iter(lambda: body.read(self.PIECE_BYTES), b""))
        got = sum(len(piece) for piece in pieces)
        if got != end - start + 1:
            raise DefinitionsCorrupt(
                f"definitions tarball range {start}-{end} came back with {got} bytes"
            )
        return pieces

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size if size >= 0 else self._size
        while wanted > 0:
            if not self._pieces:
                self._fill()
                if not self._pending:
                    break
                self._pieces.extend(self._pending.popleft().result())
                self._fill()
                continue
            piece = self._pieces.popleft()
            if len(piece) > wanted:
                piece, rest = piece[:wanted], piece[wanted:]
                self._pieces.appendleft(rest)
            parts.append(piece)
            wanted -= len(piece)
        return b"".join(parts)

    def close(self) -> None:
        # Not waiting: after a failure, a GET still stalled on its retries would
        # hold the scan for minutes; the threads only return bytes nobody reads.
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> _RangedBody:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DefinitionsStore:
    def __init__(
        self,
        s3: Any,
        root: Path,
        freshclam: FreshclamSettings,
        lease: CdnLease | None = None,
    ) -> None:
        self.s3 = s3
        self.root = root
        self.freshclam = freshclam
        # The CDN lease the fallback takes before it runs freshclam (None: local
        # tools without the audit table, which run it uncoordinated).
        self.lease = lease
        # Whether the cache holds a usable set now: asked once the lease is taken,
        # as the updater publishes before it gives the lease back (a scanner that
        # found the cache empty a moment before must not fetch it again).
        self.cache_filled: Callable[[], bool] = lambda: False
        self._freshclam: tuple[str, float] | None = None  # (version, when fetched)
        self.last_fetch: dict[str, float] = {}  # phase timings of the last fetch, for logs

    def directory(self, version: str) -> Path:
        return self.root / version

    def local_versions(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def materialize(self, ref: DefinitionsRef) -> tuple[str, Path]:
        """The version to load and its local directory, fetching it if needed."""
        if ref.source == DefinitionsSource.FRESHCLAM:
            return self._run_freshclam()
        version = ref.version or ""
        if not _SAFE_VERSION.match(version):
            raise DefinitionsCorrupt(f"definitions version {version!r} is not a safe name")
        target = self.directory(version)
        if target.is_dir():
            return version, target
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".extract-{uuid.uuid4().hex}"
        try:
            started = time.monotonic()
            digest = self._fetch_into(ref, staging)
            self.last_fetch = {
                "fetch_s": time.monotonic() - started,  # download, sha256 and extraction at once
                "tarball_bytes": digest.size,
            }
            if digest.hexdigest() != ref.sha256:
                raise DefinitionsCorrupt(
                    f"definitions tarball sha256 {digest.hexdigest()} does not match the "
                    f"manifest's {ref.sha256}"
                )
            if not database_files(staging):
                raise DefinitionsCorrupt("definitions tarball holds no database files")
            # Only now, verified, does it get its version's name: nothing unverified
            # is ever where clamd loads from.
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return version, target

    def _fetch_into(self, ref: DefinitionsRef, staging: Path) -> _Digesting:
        """Stream the tarball from S3 through sha256 and the extraction: one pass, no
        tarball on disk. The caller checks the digest before trusting ``staging``."""
        where = {"Bucket": ref.bucket, "Key": ref.key}
        uri = f"s3://{ref.bucket}/{ref.key}"
        if ref.tarball_version_id and ref.size:
            # A pinned version: parallel ranges, read in order (and, in the
            # local emulator, no whole-object copy in memory).
            pinned = {**where, "VersionId": ref.tarball_version_id}
            body: Any = _RangedBody(self.s3, pinned, ref.size, RANGE_BYTES, PARALLEL_RANGES)
        else:
            try:
                body = self.s3.get_object(**where)["Body"]
            except (ClientError, BotoCoreError) as err:
                raise _download_error(err, uri) from err
        stream = _Digesting(body, uri)
        with body:
            safe_extract(stream, staging)
            stream.drain()  # the digest covers every byte, tar padding included
        return stream

    def _run_freshclam(self) -> tuple[str, Path]:
        """The fallback: definitions straight from ClamAV's mirrors (or a private one).

        Needs outbound internet (a NAT gateway in a VPC); used only when the
        cache is unavailable or corrupt. A result younger than an hour is reused,
        and a refresh starts from it, so a cache outage does not make every scan
        download the whole database (ClamAV's mirrors block clients that do).
        A new fetch first takes the CDN lease (one fetcher at a time, none during
        a cool-down, one fallback an hour): refused, it raises CdnBusy.
        """
        if self._freshclam is not None:
            version, fetched = self._freshclam
            if time.monotonic() - fetched < FRESHCLAM_REUSE_S and self.directory(version).is_dir():
                return version, self.directory(version)
        self._take_lease()
        if self.lease is not None and self.cache_filled():
            self.lease.give_back()
            raise CacheFilled("the cache was filled while this container looked")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".freshclam-{uuid.uuid4().hex}"
        try:
            try:
                if self._freshclam is not None and self.directory(self._freshclam[0]).is_dir():
                    shutil.copytree(self.directory(self._freshclam[0]), staging)
                files = run_freshclam(staging, self.freshclam)
            finally:
                self._give_back_lease(staging)  # reads freshclam.dat: before it is removed
        except FreshclamFailed as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise DefinitionsUnavailable(f"freshclam fallback failed: {err}") from err
        digest = content_digest([describe_file(p) for p in files])
        version = f"freshclam-{digest[:12]}"
        target = self.directory(version)
        if target.exists():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.rename(target)
        self._freshclam = (version, time.monotonic())
        return version, target

    def _take_lease(self) -> None:
        if self.lease is None:
            return
        try:
            self.lease.take(self.freshclam.timeout_s + LEASE_MARGIN_S)
        except (ClientError, BotoCoreError) as err:
            # Unchecked, the fetch could be one of fifty: not without the lease.
            raise DefinitionsUnavailable(
                f"the CDN lease could not be taken ({error_code(err) or err}); "
                "freshclam was not run"
            ) from err

    def _give_back_lease(self, staging: Path) -> None:
        """Give the lease back, first recording a cool-down this run received (the
        other containers and the updater then wait it out)."""
        if self.lease is None:
            return
        until = retry_after(staging)
        try:
            if until is not None and until.timestamp() > time.time():
                log.warning(
                    "ClamAV's CDN put the freshclam fallback on cool-down",
                    extra={"coolDownUntil": until.isoformat()},
                )
                self.lease.cool_down(until.timestamp(), "a 429 or 403 to a scanner's fallback")
            self.lease.give_back()
        except (ClientError, BotoCoreError):
            # It expires by itself; a cool-down not recorded meets the next fetcher again.
            log.warning("the CDN lease could not be given back", exc_info=True)

    def prune(self, keep: set[str]) -> list[str]:
        """Delete every local version not in ``keep``; returns what was removed."""
        removed = []
        for version in self.local_versions():
            if version not in keep:
                shutil.rmtree(self.directory(version), ignore_errors=True)
                removed.append(version)
        return removed
