"""Scan one exact object version with the warm engine."""

from __future__ import annotations

import enum
import logging
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from functions.scan_object.definitions_store import (
    FRESHCLAM_REUSE_S,
    CacheFilled,
    DefinitionsStore,
)
from functions.scan_object.engine import ClamdEngine, Limits, RawResult
from functions.scan_object.readers import (
    MAIL_HEAD,
    Unpacked,
    UnpackLimits,
    archives,
    documents,
    mail,
    pdf,
    recognise,
    unpack,
    unsupported,
)
from functions.scan_object.readers.carve import any_candidate, lzma_alone, zlib_stream
from functions.scan_object.readers.extraction import batch_members
from functions.scan_object.readers.zips import more_entries_than
from functions.shared.aws import (
    ARCHIVED_CODES,
    CHANGED_CODES,
    GONE_CODES,
    error_code,
    is_denied,
    is_transient,
)
from functions.shared.cdn_lease import CdnBusy, CdnLease, Holder
from functions.shared.clock import utc_now_iso
from functions.shared.config import Settings
from functions.shared.contracts import (
    DefinitionsRef,
    DefinitionsSource,
    Engine,
    ObjectRef,
    ScanResult,
    SkipReason,
    UnscannableReason,
    Verdict,
)
from functions.shared.errors import (
    CachedTarballMissing,
    DefinitionsCorrupt,
    DefinitionsUnavailable,
    ObjectStoreUnavailable,
    ScanEngineUnavailable,
)

log = logging.getLogger(__name__)

# HEAD has no body, so botocore reports its errors by status. A 400 on HEAD of
# an object we may read is what S3 answers for SSE-C (customer-provided key)
# objects: the content is encrypted with a key we do not have.
_CUSTOMER_KEY_CODES = {"400", "BadRequest", "InvalidRequest"}
# Storage classes and Intelligent-Tiering tiers whose content must be restored
# before it can be read (Glacier Instant Retrieval reads like Standard).
_ARCHIVE_CLASSES = {"GLACIER", "DEEP_ARCHIVE"}
_ARCHIVE_TIERS = {"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"}


# clamd deaths while reading one object version before it is unscannable
# (engine-crash), per container; and the count so far.
ENGINE_CRASHES = 2
_crashes: dict[tuple[str, str, str], int] = {}

# A cold scanner waiting for the cache looks again this often.
CACHE_POLL_S = 5.0

# Unversioned keys overwritten while being scanned: follow at most this many
# overwrites before giving up (the last writer's own event scans it then).
_OVERWRITES_FOLLOWED = 3

# Up to the transfer manager's multipart threshold a single GET is as fast.
SINGLE_GET_MAX_BYTES = 8 * 1024 * 1024
# Four ranged GETs of 8 MiB at a time: more than Lambda's network needs, and a
# quarter of the buffers boto3's default of ten keeps in memory.
_TRANSFER = TransferConfig(max_concurrency=4, multipart_chunksize=8 * 1024 * 1024)


class _Head(enum.Enum):
    PRESENT = "present"
    GONE = "gone"
    SUPERSEDED = "superseded"
    CUSTOMER_KEY = "customer-key"
    ARCHIVED = "archived"
    DENIED = "denied"


# A read that ends the scan without content, and the verdict it gets.
_UNREADABLE: dict[_Head, tuple[Verdict, str]] = {
    _Head.GONE: (Verdict.SKIPPED, str(SkipReason.OBJECT_GONE)),
    _Head.SUPERSEDED: (Verdict.SKIPPED, str(SkipReason.SUPERSEDED)),
    _Head.CUSTOMER_KEY: (Verdict.UNSCANNABLE, str(UnscannableReason.ENCRYPTED)),
    _Head.ARCHIVED: (Verdict.UNSCANNABLE, str(UnscannableReason.ARCHIVED)),
    _Head.DENIED: (Verdict.UNSCANNABLE, str(UnscannableReason.ACCESS_DENIED)),
}


def is_archived(head: dict[str, Any]) -> bool:
    """Content that cannot be read until restored (HEAD tells without a GET).

    A completed restore (``Restore: ongoing-request="false", ...``) makes a
    Glacier object readable until its expiry: that is the moment it is scanned.
    """
    if head.get("ArchiveStatus") in _ARCHIVE_TIERS:
        return True
    if head.get("StorageClass") not in _ARCHIVE_CLASSES:
        return False
    return 'ongoing-request="false"' not in (head.get("Restore") or "")


# What clamd would say of a zip over MaxFiles, said without asking it.
TOO_MANY_ENTRIES = "Heuristics.Limits.Exceeded.MaxFiles"


def classify(raw: RawResult) -> tuple[Verdict, str | None]:
    """ClamAV's answer as a verdict: a heuristic for skipped content is never clean."""
    if not raw.found:
        return Verdict.CLEAN, None
    signature = raw.signature or ""
    if signature.startswith("Heuristics.Limits.Exceeded"):
        return Verdict.UNSCANNABLE, str(UnscannableReason.LIMITS_EXCEEDED)
    if signature.startswith("Heuristics.Encrypted"):
        return Verdict.UNSCANNABLE, str(UnscannableReason.ENCRYPTED)
    return Verdict.INFECTED, None


@dataclass(frozen=True)
class _DeepScan:
    signatures: list[str]
    problem: str | None
    summary: dict[str, int]


def tag_safe_label(text: str) -> str:
    """``inner.zip/eicar.com: Eicar-Test-Signature``, kept short for tags and payloads."""
    return text if len(text) <= 200 else "..." + text[-197:]


class Scanner:
    def __init__(
        self,
        s3: Any,
        settings: Settings,
        engine: ClamdEngine | None = None,
        lease: CdnLease | None = None,
    ) -> None:
        work = Path(settings.clamav_work_dir)
        self.s3 = s3
        self.settings = settings
        self.engine = engine or ClamdEngine(
            work / "engine",
            Limits(
                max_file_bytes=settings.max_object_bytes,
                max_scan_bytes=min(settings.max_scan_bytes, 4 * 1024**3 - 1),
            ),
            start_timeout_s=settings.clamd_start_timeout_s,
        )
        if lease is None and settings.table_name:
            lease = CdnLease(None, settings.table_name, Holder.FALLBACK)
        self.store = DefinitionsStore(s3, work / "defs", settings.freshclam, lease)
        self.store.cache_filled = lambda: self._cached_set() is not None

        self.objects_dir = work / "objects"
        self._load_lock = threading.Lock()
        # Versions clamd refused to load in this container: never tried again.
        self.untrusted: set[str] = set()
        # When freshclam's set last failed to load: not fetched again for an hour
        # (each try is the whole database from ClamAV's mirrors, which block that).
        self._freshclam_failed: float | None = None
        # Cache versions whose tarball was refused here (corrupt, or missing): the
        # fallback does not take them for the cache being back.
        self._refused: set[str] = set()
        # The second pass's thread, kept for the container's life (a new thread
        # per scan would cost more than a small file's whole scan).
        self._unpacker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unpack")
        self._clear_leftovers(work)

    @property
    def unpack_limits(self) -> UnpackLimits:
        """Our unpacking honours clamd's limits: in all, per file, files, depth, time."""
        limits = self.engine.limits
        return UnpackLimits(
            max_bytes=limits.max_scan_bytes,
            max_file_bytes=limits.max_file_bytes,
            max_files=limits.max_files,
            max_depth=limits.max_recursion,
            max_seconds=limits.max_scan_time_ms / 1000,
        )

    def _clear_leftovers(self, work: Path) -> None:
        """Remove what a timed-out or crashed invocation left in /tmp.

        Lambda keeps /tmp across invocations of a container; without this, the
        partial downloads of an invocation that hit its timeout would pile up.
        Loaded definitions (``defs/<version>``) stay: they are still useful.
        """
        shutil.rmtree(self.objects_dir, ignore_errors=True)
        shutil.rmtree(work / "engine" / "tmp", ignore_errors=True)
        defs = work / "defs"
        if defs.is_dir():
            for entry in defs.iterdir():
                if entry.name.startswith("."):
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)

    def scan(self, obj: ObjectRef, definitions: DefinitionsRef) -> ScanResult:
        started = time.monotonic()

        def result(verdict: Verdict, reason: str | None = None, **extra: Any) -> ScanResult:
            return ScanResult(
                verdict=verdict,
                reason=reason,
                scanned_at=utc_now_iso("milliseconds"),
                definitions_version=extra.pop("definitions_version", definitions.version),
                definitions_stale=extra.pop("definitions_stale", definitions.stale),
                duration_ms=int((time.monotonic() - started) * 1000),
                **extra,
            )

        # A folder marker is an empty key ending in "/"; one whose size the event
        # did not say is read like any object (its HEAD tells).
        if obj.key.endswith("/") and obj.size == 0:
            return result(Verdict.SKIPPED, str(SkipReason.FOLDER_MARKER))
        scanned = obj
        for _ in range(_OVERWRITES_FOLLOWED):
            outcome = self._scan_once(scanned, definitions)
            if outcome is _Head.SUPERSEDED:
                # Unversioned: the key was overwritten since its event. S3 may send
                # one event for writes that race, so the newer content may have
                # none of its own: scan what is there now, by its own eTag.
                scanned = self._current(scanned)
                if scanned is None:
                    return result(Verdict.SKIPPED, str(SkipReason.OBJECT_GONE))
                continue
            if isinstance(outcome, _Head):
                return result(*_UNREADABLE[outcome])
            moved = {"scanned_etag": scanned.etag} if scanned.etag != obj.etag else {}
            return result(**outcome, **moved)
        return result(Verdict.SKIPPED, str(SkipReason.SUPERSEDED))

    def _scan_once(self, obj: ObjectRef, definitions: DefinitionsRef) -> Any:
        """One read and scan: the verdict's fields, or why it could not be read."""
        state, size, current, etag = self._head(obj)
        pinned = {}
        if not obj.version_id and current:
            # A rescan (listed objects carry no version id) in a versioned bucket:
            # from here on, this exact version is what is read, tagged, deleted.
            obj = replace(obj, version_id=current)
            pinned = {"scanned_version_id": current}
        elif not obj.version_id and not obj.etag and etag:
            # Unversioned and nothing pinned yet (a listing or inventory row without
            # an eTag): the content this HEAD saw is what is read, tagged, deleted.
            obj = replace(obj, etag=etag)
            pinned = {"scanned_etag": etag}
        if state is not _Head.PRESENT:
            return state
        if size > self.settings.max_object_bytes:
            # Never downloaded: ClamAV would skip it, and we must not call that clean.
            return {
                "verdict": Verdict.UNSCANNABLE,
                "reason": str(UnscannableReason.TOO_LARGE),
                **pinned,
            }
        path = self.objects_dir / uuid.uuid4().hex
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        try:
            # On a cold start (or a definitions switch) the download overlaps
            # with fetching and loading the definitions.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load") as pool:
                loading = pool.submit(self._load, definitions)
                state = self._download(obj, path, size)
                version, stale = loading.result()
            if state is not _Head.PRESENT:
                return state
            try:
                raw, deep = self.scan_local(path)
            except ScanEngineUnavailable:
                if self._poisoned(obj):
                    return {
                        "verdict": Verdict.UNSCANNABLE,
                        "reason": str(UnscannableReason.ENGINE_CRASH),
                        **pinned,
                    }
                raise
            verdict, reason = classify(raw)
            signatures = [raw.signature] if raw.signature else []
            found_by = str(Engine.CLAMAV) if verdict != Verdict.CLEAN else None
            if verdict == Verdict.INFECTED:
                deep = None  # ClamAV's answer is final; the second pass adds nothing
            if deep is not None:
                if deep.signatures:
                    # A member infected anywhere makes the object infected, whatever else.
                    verdict, reason, signatures = Verdict.INFECTED, None, deep.signatures
                    found_by = str(Engine.UNPACK)
                elif verdict == Verdict.CLEAN and deep.problem:
                    verdict, reason = Verdict.UNSCANNABLE, deep.problem
                    found_by = str(Engine.UNPACK)
            if verdict == Verdict.CLEAN:
                # Clean is a promise: clamd must still be detecting (it says OK to
                # everything with its temp directory gone, or its disk full). Checked
                # while the object still takes its room, with nothing repaired first;
                # if clamd fails it, this scan is retried on a fresh clamd.
                self.engine.check_canary()
        finally:
            path.unlink(missing_ok=True)
        return {
            "verdict": verdict,
            "reason": reason,
            "signatures": signatures,
            "engine": self.engine.engine_version,
            "definitions_version": version,
            # Old, or the cache was unusable and so was freshclam: an older loaded set.
            "definitions_stale": stale,
            "bytes_scanned": size,
            "found_by": found_by,
            "unpacked": deep.summary if deep is not None else None,
            **pinned,
        }

    def _poisoned(self, obj: ObjectRef) -> bool:
        """After clamd failed on ``obj``: whether it died reading it for the
        ``ENGINE_CRASHES`` time (then the object is unscannable, not retried again).

        Counted in this container: a retry (Scan Object retries the engine's
        failures) comes back to the container that just failed, idle and warm,
        so a poison object costs at most that many clamd restarts, not one per
        retry and redrive.
        """
        if self.engine.is_alive():
            return False  # clamd is there: it did not die on this object
        identity = (obj.bucket, obj.key, obj.version_id or obj.etag or "")
        _crashes[identity] = _crashes.get(identity, 0) + 1
        log.error("clamd died scanning %s (%d of %d)", obj.uri, _crashes[identity], ENGINE_CRASHES)
        return _crashes[identity] >= ENGINE_CRASHES

    def _current(self, obj: ObjectRef) -> ObjectRef | None:
        """What the unversioned key holds now (its eTag and size); None if it is gone."""
        try:
            head = self.s3.head_object(Bucket=obj.bucket, Key=obj.key)
        except ClientError as err:
            if error_code(err) in GONE_CODES:
                return None
            if is_transient(err):
                raise ObjectStoreUnavailable(
                    f"HEAD {obj.uri} throttled: {error_code(err)}"
                ) from err
            raise
        except BotoCoreError as err:
            raise ObjectStoreUnavailable(f"HEAD {obj.uri} failed: {err}") from err
        return replace(
            obj, etag=str(head.get("ETag", "")).strip('"') or None, size=head.get("ContentLength")
        )

    def scan_local(self, path: Path) -> tuple[RawResult, _DeepScan | None]:
        """clamd's scan of the file and our second pass, side by side.

        The second pass runs in a thread while clamd scans: they read the same
        file and do not depend on each other, so it costs time only where it
        takes longer. For a plain file it is the recognition and the search for
        an archive's mark anywhere in it (for a gigabyte, a fraction of clamd's
        time), and it stops there.
        """
        if more_entries_than(path, self.engine.limits.max_files):
            # ClamAV counts no empty entry toward MaxFiles, and spends MaxScanTime
            # (ten minutes) on a zip of a million of them; the directory says
            # enough: over MaxFiles, in milliseconds, never clean.
            return RawResult(found=True, signature=TOO_MANY_ENTRIES), None
        second = self._unpacker.submit(self.second_pass, path)
        raw = self.engine.scan_file(path)
        return raw, second.result()

    def second_pass(self, path: Path, known_archive: bool = False) -> _DeepScan | None:
        """The second pass: what libarchive opens and ClamAV did not, scanned by clamd.

        None for a file libarchive does not recognise as an archive or a
        compressed stream (a plain file: ClamAV's pass saw every byte of it).
        The extraction directory is removed afterwards, whatever happens.
        """
        if (
            not known_archive
            and recognise(path) is None
            and not any_candidate(path)
            and not documents.of_interest(archives.read_head(path, 8))
            and not mail.is_mail(head := archives.read_head(path, MAIL_HEAD))
            and not pdf.is_pdf(head)
            and not unsupported.kind(head)
            and not zlib_stream(head)
            and not lzma_alone(head)
        ):
            return None
        root = path.with_name(path.name + ".unpacked")
        try:
            unpacked = unpack(path, root, self.unpack_limits)
            found = self._scan_unpacked(unpacked)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        signatures, problems = [], list(unpacked.problems)
        for label, raw in found:
            verdict, reason = classify(raw)
            if verdict == Verdict.INFECTED:
                signatures.append(tag_safe_label(f"{label}: {raw.signature}"))
            elif reason:
                problems.append(reason)
        return _DeepScan(
            signatures=signatures,
            problem=problems[0] if problems else None,
            summary=unpacked.summary(),
        )

    def _scan_unpacked(self, unpacked: Unpacked) -> list[tuple[str, RawResult]]:
        """clamd's findings in what the second pass wrote, by member label, in order.

        One CONTSCAN of the whole directory; a batch it reports something in is
        written out member by member and scanned again, to name the member.
        """
        if not unpacked.scannable:
            return []
        root = unpacked.root
        found = []
        for name, raw in sorted(self.engine.scan_tree(root).items()):
            labels = unpacked.batches.get(name)
            if labels is None:
                found.append((unpacked.labels.get(name, name), raw))
                continue
            members = root.with_name(f"{root.name}.{name}")
            try:
                indexes = batch_members(root / name, members)
                for member, member_raw in sorted(self.engine.scan_tree(members).items()):
                    found.append((labels[indexes[member]], member_raw))
            finally:
                shutil.rmtree(members, ignore_errors=True)
        return found

    def load(self, definitions: DefinitionsRef) -> str:
        """Make clamd hold these definitions; returns the version it holds."""
        return self._load(definitions)[0]

    def _load(self, definitions: DefinitionsRef) -> tuple[str, bool]:
        """The version clamd holds for this scan, and whether it is stale.

        Serialised with the init-time warm-up, which may still be loading. A
        version that did not load is not trusted again in this container.
        """
        with self._load_lock:
            if definitions.source != DefinitionsSource.FRESHCLAM:
                return self._switch_to(definitions), definitions.stale
            return self._fallback()

    def _switch_to(self, definitions: DefinitionsRef) -> str:
        """clamd onto a set of the cache: DefinitionsCorrupt or CachedTarballMissing
        when it cannot be had (the state machine then falls back to freshclam)."""
        if definitions.version in self.untrusted:
            raise DefinitionsCorrupt(
                f"definitions {definitions.version} did not load here before; not again"
            )
        try:
            version, directory = self.store.materialize(definitions)
        except (DefinitionsCorrupt, CachedTarballMissing):
            self._refused.add(str(definitions.version))
            raise
        self._engage(version, directory)
        return version

    def _engage(self, version: str, directory: Path) -> None:
        """clamd onto ``directory``; DefinitionsCorrupt (and never again) if it does
        not load, clamd then back on the last set that did."""
        before = self.engine.loaded_version
        try:
            if version in self.untrusted:  # freshclam's, whose version only shows now
                raise DefinitionsCorrupt(f"definitions {version} did not load here before")
            self.engine.ensure(version, directory)
        except DefinitionsCorrupt:
            self.untrusted.add(version)
            self.store.prune(keep={v for v in (self.engine.loaded_version,) if v})
            raise
        if before != version:
            log.info(
                "definitions loaded",
                extra={
                    "definitionsVersion": version,
                    "fetch": self.store.last_fetch,
                    "loadSeconds": self.engine.last_load_s,
                },
            )
        # The old version is unloaded now: keep only the one clamd holds.
        self.store.prune(keep={version})

    def _fallback(self) -> tuple[str, bool]:
        """The cache was unusable (Use Freshclam Instead), in this order:

        - the cache again, if it is back with a set not refused here (a retry,
          or a wait, finds the set the updater published meanwhile);
        - freshclam's set: this container's of the last hour, or a new fetch
          under the CDN lease (one fetcher at a time, none during a cool-down,
          one fallback an hour across all containers);
        - the loaded set, flagged stale (old signatures beat no scan);
        - with none loaded, a wait for the cache, while the updater holds the
          lease or what refused it ends within ``definitions_wait_s``; then
          DefinitionsUnavailable, which the state machine retries.

        Never DefinitionsCorrupt: that would send the execution back here, round
        after round, until its history is full.
        """
        deadline = time.time() + self.settings.definitions_wait_s
        started = time.monotonic()
        while True:
            cached = self._cached_set()
            if cached is not None:
                try:
                    version = self._switch_to(cached)
                except (DefinitionsCorrupt, CachedTarballMissing, DefinitionsUnavailable) as err:
                    log.warning("the cache's set could not be had", extra={"why": str(err)})
                else:
                    if time.monotonic() - started > CACHE_POLL_S:
                        log.info(
                            "waited for the cache",
                            extra={"seconds": round(time.monotonic() - started, 1)},
                        )
                    return version, cached.stale
            failed = self._freshclam_failed
            if failed is not None and time.monotonic() - failed < FRESHCLAM_REUSE_S:
                return self._fallback_failed("its definitions did not load here within the hour")
            try:
                version, directory = self.store.materialize(
                    DefinitionsRef(source=str(DefinitionsSource.FRESHCLAM))
                )
            except CdnBusy as busy:
                if self._cached_set() is not None:
                    continue  # filled since this container looked (the lease was given back)
                if self._warm() or not self._may_end(busy, deadline):
                    return self._fallback_failed(busy)
                time.sleep(CACHE_POLL_S)
                continue
            except CacheFilled:
                continue  # the updater published as this container took the lease
            except DefinitionsUnavailable as err:
                return self._fallback_failed(err)
            try:
                self._engage(version, directory)
            except DefinitionsCorrupt as err:
                self._freshclam_failed = time.monotonic()
                return self._fallback_failed(err)
            return version, False

    @staticmethod
    def _may_end(busy: CdnBusy, deadline: float) -> bool:
        """Whether waiting until ``deadline`` can help: the updater's fetch fills the
        cache, and a lease or cool-down may end by then."""
        if time.time() + CACHE_POLL_S > deadline:
            return False
        return busy.holder == str(Holder.UPDATER) or busy.until <= deadline

    def _cached_set(self) -> DefinitionsRef | None:
        """The cache's current set, if it is usable and was not refused here."""
        from functions.fetch_definitions.logic import current_definitions

        try:
            ref = current_definitions(
                self.s3,
                self.settings.require("definitions_bucket", "DEFINITIONS_BUCKET_NAME"),
                self.settings.definitions_prefix,
                self.settings.max_definitions_age_hours,
            )
        except (DefinitionsUnavailable, BotoCoreError):
            return None
        if ref.version in self.untrusted or ref.version in self._refused:
            return None
        return ref

    def _fallback_failed(self, why: object) -> tuple[str, bool]:
        """The freshclam fallback gave nothing loadable: the loaded set scans on (the
        result flagged stale unless it is freshclam's own), or with none,
        ``DefinitionsUnavailable``."""
        if not self._warm():
            cause = why if isinstance(why, BaseException) else None
            if isinstance(why, DefinitionsUnavailable):
                raise DefinitionsUnavailable(str(why)) from cause
            if isinstance(why, CdnBusy):
                raise DefinitionsUnavailable(
                    "no usable set in the cache, and the freshclam fallback may not fetch "
                    f"now: {why}"
                ) from cause
            raise DefinitionsUnavailable(f"freshclam fallback failed: {why}") from cause
        log.warning(
            "freshclam fallback failed; scanning with the loaded definitions",
            extra={"definitionsVersion": self.engine.loaded_version, "why": str(why)},
        )
        version = str(self.engine.loaded_version)
        return version, not version.startswith("freshclam-")

    def _warm(self) -> bool:
        return self.engine.loaded_version is not None and self.engine.is_alive()

    def warm_up(self) -> str:
        """Load the cache's current definitions before the first request asks."""
        from functions.fetch_definitions.logic import current_definitions

        ref = current_definitions(
            self.s3,
            self.settings.require("definitions_bucket", "DEFINITIONS_BUCKET_NAME"),
            self.settings.definitions_prefix,
            self.settings.max_definitions_age_hours,
        )
        return self.load(ref)

    def _head(self, obj: ObjectRef) -> tuple[_Head, int, str | None, str | None]:
        """What the object is: readable or why not, its size, its current version id
        and eTag."""
        try:
            head = self.s3.head_object(Bucket=obj.bucket, Key=obj.key, **obj.pin_args)
        except ClientError as err:
            state = self._read_error(obj, "HEAD", err)
            if state is _Head.PRESENT:
                raise
            return state, 0, None, None
        except BotoCoreError as err:  # no connection, a timeout: retried
            raise ObjectStoreUnavailable(f"HEAD {obj.uri} failed: {err}") from err
        version = head.get("VersionId")
        version = None if version in (None, "", "null") else str(version)
        etag = str(head.get("ETag") or "").strip('"') or None
        if is_archived(head):
            return _Head.ARCHIVED, 0, version, etag
        return _Head.PRESENT, int(head["ContentLength"]), version, etag

    def _download(self, obj: ObjectRef, path: Path, size: int) -> _Head:
        try:
            if obj.version_id and size > SINGLE_GET_MAX_BYTES:
                # A version id pins the content, so parallel ranged GETs are safe.
                self.s3.download_file(
                    obj.bucket, obj.key, str(path), ExtraArgs=obj.version_args, Config=_TRANSFER
                )
            else:
                # One GET, pinned (version id, or If-Match on the eTag, which the
                # transfer manager would not pass through). It also spares the
                # HEAD the transfer manager sends first: we already made one.
                body = self.s3.get_object(Bucket=obj.bucket, Key=obj.key, **obj.pin_args)["Body"]
                with body, path.open("wb") as out:
                    shutil.copyfileobj(body, out, 8 * 1024 * 1024)
        except ClientError as err:
            state = self._read_error(obj, "GET", err)
            if state is _Head.PRESENT:
                raise
            return state
        except BotoCoreError as err:  # a dropped or timed-out stream: retried
            raise ObjectStoreUnavailable(f"GET {obj.uri} failed: {err}") from err
        return _Head.PRESENT

    @staticmethod
    def _read_error(obj: ObjectRef, what: str, err: ClientError) -> _Head:
        """What a failed read says about the object; PRESENT means: re-raise."""
        code = error_code(err)
        if code in GONE_CODES:
            return _Head.GONE
        if code in CHANGED_CODES:
            return _Head.SUPERSEDED
        if what == "HEAD" and code in _CUSTOMER_KEY_CODES:
            return _Head.CUSTOMER_KEY
        if code in ARCHIVED_CODES:
            return _Head.ARCHIVED
        if is_denied(err):
            return _Head.DENIED
        if is_transient(err):
            raise ObjectStoreUnavailable(f"{what} {obj.uri} throttled: {code}") from err
        return _Head.PRESENT
