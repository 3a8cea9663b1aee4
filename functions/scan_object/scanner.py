"""Scan one exact object version with the warm engine."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from functions.scan_object.definitions_store import DefinitionsStore
from functions.scan_object.engine import ClamdEngine, Limits, RawResult
from functions.shared.aws import error_code, is_transient
from functions.shared.config import Settings
from functions.shared.contracts import (
    DefinitionsRef,
    ObjectRef,
    ScanResult,
    SkipReason,
    UnscannableReason,
    Verdict,
)
from functions.shared.errors import ObjectStoreUnavailable

_GONE_CODES = {"404", "NoSuchKey", "NoSuchVersion", "NotFound"}
# A version id that is not of this bucket answers 400 InvalidArgument.
_BAD_VERSION_CODES = {"InvalidArgument", "400"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


class Scanner:
    def __init__(self, s3: Any, settings: Settings, engine: ClamdEngine | None = None) -> None:
        work = Path(settings.clamav_work_dir)
        self.s3 = s3
        self.settings = settings
        self.engine = engine or ClamdEngine(
            work / "engine",
            Limits(
                max_file_bytes=settings.max_object_bytes,
                # Archives expand: allow four times the object, within ClamAV's 4 GiB.
                max_scan_bytes=min(settings.max_object_bytes * 4, 4 * 1024**3 - 1),
            ),
            start_timeout_s=settings.clamd_start_timeout_s,
        )
        self.store = DefinitionsStore(s3, work / "defs", settings.freshclam)
        self.objects_dir = work / "objects"
        self._load_lock = threading.Lock()

    def scan(self, obj: ObjectRef, definitions: DefinitionsRef) -> ScanResult:
        started = time.monotonic()

        def result(verdict: Verdict, reason: str | None = None, **extra: Any) -> ScanResult:
            return ScanResult(
                verdict=verdict,
                reason=reason,
                scanned_at=_now(),
                definitions_version=extra.pop("definitions_version", definitions.version),
                definitions_stale=definitions.stale,
                duration_ms=int((time.monotonic() - started) * 1000),
                **extra,
            )

        if obj.key.endswith("/") and (obj.size or 0) == 0:
            return result(Verdict.SKIPPED, str(SkipReason.FOLDER_MARKER))
        size = self._head_size(obj)
        if size is None:
            return result(Verdict.SKIPPED, str(SkipReason.OBJECT_GONE))
        if size > self.settings.max_object_bytes:
            # Never downloaded: ClamAV would skip it, and we must not call that clean.
            return result(Verdict.UNSCANNABLE, str(UnscannableReason.TOO_LARGE))

        path = self.objects_dir / uuid.uuid4().hex
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        try:
            # On a cold start (or a definitions switch) the download overlaps
            # with fetching and loading the definitions.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load") as pool:
                loading = pool.submit(self.load, definitions)
                present = self._download(obj, path)
                version = loading.result()
            if not present:
                return result(Verdict.SKIPPED, str(SkipReason.OBJECT_GONE))
            raw = self.engine.scan_file(path)
        finally:
            path.unlink(missing_ok=True)
        verdict, reason = classify(raw)
        return result(
            verdict,
            reason,
            signatures=[raw.signature] if raw.signature else [],
            engine=self.engine.engine_version,
            definitions_version=version,
            bytes_scanned=size,
        )

    def load(self, definitions: DefinitionsRef) -> str:
        """Make clamd hold these definitions; returns their version.

        Serialised with the init-time warm-up, which may still be loading.
        """
        with self._load_lock:
            version, directory = self.store.materialize(definitions)
            self.engine.ensure(version, directory)
            # The old version is unloaded now: keep only the one clamd holds.
            self.store.prune(keep={version})
            return version

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

    def _head_size(self, obj: ObjectRef) -> int | None:
        try:
            head = self.s3.head_object(Bucket=obj.bucket, Key=obj.key, **obj.version_args)
        except ClientError as err:
            code = error_code(err)
            if code in _GONE_CODES or (obj.version_id and code in _BAD_VERSION_CODES):
                return None
            if is_transient(err):
                raise ObjectStoreUnavailable(f"HEAD {obj.uri} throttled: {code}") from err
            raise
        return int(head["ContentLength"])

    def _download(self, obj: ObjectRef, path: Path) -> bool:
        try:
            self.s3.download_file(obj.bucket, obj.key, str(path), ExtraArgs=obj.version_args)
        except ClientError as err:
            code = error_code(err)
            if code in _GONE_CODES:
                return False
            if is_transient(err):
                raise ObjectStoreUnavailable(f"GET {obj.uri} throttled: {code}") from err
            raise
        return True
