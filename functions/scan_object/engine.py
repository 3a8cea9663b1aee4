"""A warm ClamAV engine: one clamd per container, driven over its local socket.

Loading a full ClamAV database takes seconds to tens of seconds and over a
gigabyte of memory. clamd pays that once per container (and again only when
the definitions change), so a warm invocation costs only the scan itself. The
peers run ``clamscan`` per object and pay the load every time.

Definitions live in versioned directories under ``<work>/defs/``; clamd's
``DatabaseDirectory`` is the symlink ``<work>/db``. A new version is switched
in by repointing the symlink and asking clamd to ``RELOAD``; with
``ConcurrentDatabaseReload no`` clamd frees the old engine before it loads
the new one, which halves peak memory, and the reload blocks scanning, which
is what we want since one Lambda container runs one invocation at a time.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from functions.shared.errors import DefinitionsCorrupt, ScanEngineUnavailable, ScanFailed

_SOCKET_TIMEOUT_S = 900.0
# What clamd logs when a database set itself will not load.
_DATABASE_ERRORS = ("Malformed database", "Database reload failed", "Can't load", "cli_load")
_PR_SET_PDEATHSIG = 1
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes with its NUL; leave some room

# A signature of our own, loaded with every set: clamd must report the canary
# file, or it is not really scanning. clamd 1.4 answers OK for every file,
# EICAR included, when its TemporaryDirectory has gone, and a clean verdict is
# a promise, so each one is followed by a canary scan (a fraction of a
# millisecond; clamd never caches a detection).
CANARY_SIGNATURE = "S3VirusScanner.EngineCanary"
CANARY_BODY = b"s3-virus-scanner engine canary: clamd must report this file\n"
CANARY_DATABASE_FILE = "s3-virus-scanner-canary.hdb"


@dataclass(frozen=True)
class Limits:
    """ClamAV's scan limits, set explicitly so nothing is skipped silently.

    With ``AlertExceedsMax`` a file that hits a limit is reported as
    ``Heuristics.Limits.Exceeded.*`` instead of the default silent OK.
    """

    max_file_bytes: int
    max_scan_bytes: int
    max_recursion: int = 16
    max_files: int = 10_000
    # clamd's default is 120 s, after which it alerts MaxScanTime; a large
    # archive may legitimately need longer inside a 15-minute Lambda.
    max_scan_time_ms: int = 600_000

    def config_lines(self) -> list[str]:
        return [
            f"MaxFileSize {self.max_file_bytes}",
            f"MaxScanSize {self.max_scan_bytes}",
            f"StreamMaxLength {self.max_file_bytes}",
            f"MaxRecursion {self.max_recursion}",
            f"MaxFiles {self.max_files}",
            f"MaxScanTime {self.max_scan_time_ms}",
            # Defaults are 100 MB and 40 MB: beyond them ClamAV silently skips
            # PCRE (logical) signatures and embedded executables, and
            # AlertExceedsMax does not cover these two. Match the file limit.
            f"PCREMaxFileSize {self.max_file_bytes}",
            f"MaxEmbeddedPE {self.max_file_bytes}",
            "AlertExceedsMax yes",
            "AlertEncrypted yes",
            "AlertEncryptedArchive yes",
            "AlertEncryptedDoc yes",
            "AlertBrokenExecutables no",
            # Heuristic alerts (limits, encryption) wait until the whole file is
            # scanned, so a real signature match anywhere wins over them.
            "HeuristicScanPrecedence no",
        ]


@dataclass(frozen=True)
class RawResult:
    """clamd's answer for one file: ``OK`` or ``FOUND`` with a signature."""

    found: bool
    signature: str | None


class ClamdEngine:
    def __init__(
        self,
        work_dir: Path,
        limits: Limits,
        clamd: str = "clamd",
        start_timeout_s: float = 600.0,
        cache: bool = True,
    ) -> None:
        self.work_dir = work_dir
        # clamd remembers the hashes of clean files; a benchmark that scans one
        # file repeatedly turns that off to measure the scan, not the cache.
        self.cache = cache
        self.limits = limits
        self.clamd = shutil.which(clamd) or clamd
        self.start_timeout_s = start_timeout_s
        self.socket_path = work_dir / "clamd.sock"
        self._socket_dir: Path | None = None
        if len(str(self.socket_path).encode()) > _MAX_SOCKET_PATH:
            # A Unix socket path holds at most 107 bytes; clamd truncates a longer
            # one and then cannot set its mode. Deep work directories (a long TMPDIR
            # on a laptop) get a short directory of their own under /tmp.
            import tempfile

            self._socket_dir = Path(tempfile.mkdtemp(prefix="clamd-", dir="/tmp"))
            self.socket_path = self._socket_dir / "clamd.sock"
        self.config_path = work_dir / "clamd.conf"
        self.db_link = work_dir / "db"
        self.log_path = work_dir / "clamd.log"
        self.stderr_path = work_dir / "clamd.stderr"
        self.tmp_dir = work_dir / "tmp"
        self.process: subprocess.Popen | None = None
        self.loaded_version: str | None = None
        # The last (version, directory) that loaded and answered: what a failed
        # load falls back to.
        self.last_good: tuple[str, Path] | None = None
        self.engine_version: str | None = None
        self.last_load_s: float | None = None
        self.starts = 0
        self.reloads = 0
        self._views = 0
        atexit.register(self.stop)

    # -- lifecycle -----------------------------------------------------------

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure(self, version: str, database_dir: Path) -> None:
        """Make clamd answer with ``version`` loaded: start, restart or reload.

        A set that clamd cannot load is ``DefinitionsCorrupt``: after a failed
        RELOAD clamd still answers PING, its old engine already freed, and the
        next SCAN kills it. So every load is confirmed by scanning a harmless
        canary file (below); if that fails, clamd is started again on the last set that
        did load, and the error names the set that did not.
        """
        if self.is_alive() and self.loaded_version == version:
            return
        self._point_db_link(database_dir)
        started = time.monotonic()
        try:
            if self.is_alive():
                self._reload()
            else:
                self._start()
            self._probe()
        except ScanEngineUnavailable as err:
            self.stop()
            self._restore_last_good(version, err)
            raise
        self.last_load_s = time.monotonic() - started
        self.loaded_version = version
        self.last_good = (version, database_dir)
        self.engine_version = self.version()

    def _restore_last_good(self, version: str, err: ScanEngineUnavailable) -> None:
        """After a load failed: the last good set again, and the failure named; returns
        only when the failure is not the set's (then the caller re-raises it)."""
        log = self._log_tail()
        good = self.last_good
        if good is not None and good[0] != version and good[1].is_dir():
            self._point_db_link(good[1])
            self._start()
            self._probe()
            self.loaded_version, self.engine_version = good[0], self.version()
            raise DefinitionsCorrupt(
                f"definitions {version} do not load ({log}); {good[0]} is loaded again"
            ) from err
        if any(marker in log for marker in _DATABASE_ERRORS):
            raise DefinitionsCorrupt(f"definitions {version} do not load: {log}") from err

    def _probe(self) -> None:
        """A scan of the canary: proof that the loaded engine answers and detects."""
        try:
            self.check_canary()
        except ScanFailed as err:
            raise ScanEngineUnavailable(f"clamd cannot scan after loading: {err}") from err

    def check_canary(self) -> None:
        """Raise ``ScanEngineUnavailable`` (and stop clamd, so the retry starts a fresh
        one) unless clamd reports the canary with our signature."""
        canary = self.work_dir / "canary.txt"
        if not canary.is_file() or canary.stat().st_size != len(CANARY_BODY):
            canary.write_bytes(CANARY_BODY)
        # As things are: no repair first (a missing temp directory is what it catches).
        raw = self.scan_file(canary, repair=False)
        # ClamAV names signatures from unsigned files "<name>.UNOFFICIAL".
        if raw.found and (raw.signature or "").split(".UNOFFICIAL")[0] == CANARY_SIGNATURE:
            return
        self.stop()
        raise ScanEngineUnavailable(
            f"clamd did not report its canary (answered {raw.signature or 'OK'}): it is not "
            "scanning; stopped, the retry starts it again"
        )

    def _point_db_link(self, database_dir: Path) -> None:
        """Point clamd's database directory at a view of the set: a directory of our
        own holding a link to each of the set's files, and our canary signature.

        The set's own directory is never written to (it may be freshclam's
        /var/lib/clamav, or a verified extraction). The ``db`` symlink is
        replaced atomically: clamd never sees a missing directory.
        """
        views = self.work_dir / "views"
        views.mkdir(parents=True, exist_ok=True)
        self._views += 1
        view = views / f"{os.getpid()}-{self._views}"
        shutil.rmtree(view, ignore_errors=True)
        view.mkdir()
        source = database_dir.resolve()
        for entry in sorted(source.iterdir()):
            if entry.is_file() and not entry.name.startswith("."):
                (view / entry.name).symlink_to(entry)
        install_canary(view)
        staging = self.work_dir / "db.next"
        if staging.is_symlink() or staging.exists():
            staging.unlink()
        staging.symlink_to(view, target_is_directory=True)
        os.replace(staging, self.db_link)
        for old in views.iterdir():  # the loaded engine lives in memory, not in these
            if old != view:
                shutil.rmtree(old, ignore_errors=True)

    def _write_config(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            "Foreground yes",
            f"LocalSocket {self.socket_path}",
            "LocalSocketMode 600",
            f"DatabaseDirectory {self.db_link}",
            f"TemporaryDirectory {self.tmp_dir}",
            f"LogFile {self.log_path}",
            "LogTime yes",
            "LogClean no",
            # Never fail to start because a stale clamd still holds the log's lock.
            "LogFileUnlock yes",
            "LogVerbose no",
            # We decide when definitions change; clamd must not reload by itself.
            "SelfCheck 0",
            "ConcurrentDatabaseReload no",
            "MaxThreads 2",
            "MaxQueue 4",
            "ReadTimeout 900",
            "CommandReadTimeout 30",
            # A blocking reload waits for clamd's idle worker threads to exit, and
            # they linger IdleTimeout seconds after their last job: keep it short
            # or a definitions swap stalls for that long.
            "IdleTimeout 1",
            "ExitOnOOM yes",
            "Bytecode yes",
            *([] if self.cache else ["DisableCache yes"]),
            *self.limits.config_lines(),
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _start(self) -> None:
        self.stop()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if self.socket_path.exists():
            self.socket_path.unlink()
        self.log_path.write_text("")
        stderr = self.stderr_path.open("wb")
        try:
            self.process = subprocess.Popen(
                [self.clamd, f"--config-file={self.config_path}"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # A file, not a pipe: nobody drains a pipe between invocations,
                # and a full one would block clamd.
                stderr=stderr,
                preexec_fn=_die_with_parent if _in_main_thread() else None,
            )
        except OSError as err:
            raise ScanEngineUnavailable(f"cannot start clamd ({self.clamd}): {err}") from err
        finally:
            stderr.close()  # clamd holds its own descriptor
        self.starts += 1
        self._wait_ready("start")

    def _reload(self) -> None:
        reply = self._command(b"zRELOAD\0")
        if reply != "RELOADING":
            raise ScanEngineUnavailable(f"clamd answered {reply!r} to RELOAD")
        self.reloads += 1
        self._wait_ready("reload")

    def _wait_ready(self, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        # Polled finely: clamd creates its socket only once its load ends, and a
        # failed connect costs microseconds. Backing off to 0.5 s made a start
        # wait up to 0.5 s longer than the load (0.4 s measured on a 2.1 s load).
        # During a RELOAD the PING's connection is answered when the reload ends.
        delay = 0.01
        while time.monotonic() < deadline:
            if not self.is_alive():
                raise ScanEngineUnavailable(f"clamd exited during {what}: {self._log_tail()}")
            try:
                if self._command(b"zPING\0", timeout=5.0) == "PONG":
                    return
            except OSError:
                pass
            time.sleep(delay)
        self.stop()
        raise ScanEngineUnavailable(f"clamd not ready {self.start_timeout_s:.0f}s after {what}")

    def _log_tail(self) -> str:
        text = ""
        for path in (self.stderr_path, self.log_path):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-5:]) or "no output"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.loaded_version = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    # -- protocol ------------------------------------------------------------

    def _command_all(self, command: bytes, timeout: float = _SOCKET_TIMEOUT_S) -> list[str]:
        """Every ``\0``-terminated reply until clamd closes the connection."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket_path))
            sock.sendall(command)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        replies = b"".join(chunks).split(b"\0")
        return [r.decode(errors="replace").strip() for r in replies if r.strip()]

    def _command(self, command: bytes, timeout: float = _SOCKET_TIMEOUT_S) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.socket_path))
            sock.sendall(command)
            chunks = []
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                chunks.append(chunk)
                if chunk.endswith(b"\0"):
                    break
        return b"".join(chunks).rstrip(b"\0").decode(errors="replace").strip()

    def version(self) -> str:
        """clamd's engine version, e.g. ``1.4.6`` (without the database part)."""
        reply = self._command(b"zVERSION\0", timeout=10.0)
        return reply.removeprefix("ClamAV ").split("/", 1)[0]

    def scan_file(self, path: Path, repair: bool = True) -> RawResult:
        """Scan one local file; the engine must have been ``ensure``d."""
        if not self.is_alive():
            raise ScanEngineUnavailable("clamd is not running")
        if repair:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)  # without it clamd says OK to all
        try:
            reply = self._command(b"zSCAN " + str(path).encode() + b"\0")
        except OSError as err:
            raise ScanEngineUnavailable(f"clamd did not answer: {err}") from err
        return parse_reply(str(path), reply)

    def scan_tree(self, directory: Path) -> dict[str, RawResult]:
        """Scan every file under ``directory`` in one call (CONTSCAN: it goes on after a
        match); the files clamd found something in, by name relative to ``directory``."""
        if not self.is_alive():
            raise ScanEngineUnavailable("clamd is not running")
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        try:
            replies = self._command_all(b"zCONTSCAN " + str(directory).encode() + b"\0")
        except OSError as err:
            raise ScanEngineUnavailable(f"clamd did not answer: {err}") from err
        found: dict[str, RawResult] = {}
        for reply in replies:
            path, _, _ = reply.partition(": ")
            if path == str(directory) and reply.endswith(" OK"):
                continue  # nothing found anywhere
            try:
                relative = Path(path).relative_to(directory).as_posix()
            except ValueError:
                raise ScanEngineUnavailable(f"unexpected clamd reply: {reply[:300]!r}") from None
            found[relative] = parse_reply(path, reply)
        return found


def install_canary(database_dir: Path) -> None:
    """Our canary's hash signature, beside the set's own files (clamd loads every .hdb)."""
    digest = hashlib.md5(CANARY_BODY, usedforsecurity=False).hexdigest()  # .hdb is MD5
    line = f"{digest}:{len(CANARY_BODY)}:{CANARY_SIGNATURE}\n"
    target = database_dir / CANARY_DATABASE_FILE
    if not target.is_file() or target.read_text() != line:
        target.write_text(line)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _die_with_parent() -> None:
    """Ask Linux to stop clamd when the thread that started it dies.

    Linux ties PDEATHSIG to the parent *thread*, so this is set only when clamd
    is started from the main thread. The scanner starts clamd from its warm-up
    or loader threads, where clamd must outlive the thread; there ``atexit``
    stops clamd on a normal exit, and in Lambda the container's end does.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def parse_reply(path: str, reply: str) -> RawResult:
    """``<path>: OK`` / ``<path>: <signature> FOUND`` / ``<path>: <message> ERROR``."""
    body = reply.removeprefix(f"{path}:").strip()
    if body == "OK":
        return RawResult(found=False, signature=None)
    if body.endswith(" FOUND"):
        return RawResult(found=True, signature=body.removesuffix(" FOUND").strip())
    if body.endswith(" ERROR"):
        message = body.removesuffix(" ERROR").strip()
        if "Can't allocate memory" in message or "out of memory" in message.lower():
            raise ScanEngineUnavailable(f"clamd ran out of memory: {message}")
        raise ScanFailed(f"ClamAV could not scan the object: {message}")
    raise ScanEngineUnavailable(f"unexpected clamd reply: {reply[:300]!r}")
