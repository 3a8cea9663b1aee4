"""`scanctl local`: the whole pipeline on this machine, through the local harness."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scanctl import samples
from scanctl.harness import ExecutionReport, HarnessOptions, LocalScanner

SYSTEM_DATABASE = Path("/var/lib/clamav")
# Executions in flight at once: keeps threads and memory bounded for big trees.
BATCH = 64


class NothingToScan(Exception):
    """The arguments hold no files."""


@dataclass(frozen=True)
class Target:
    path: Path
    key: str
    # Why it is not scanned (a FIFO, a symlink loop...): an error row, never read.
    problem: str | None = None


@dataclass
class FileResult:
    file: str
    key: str
    verdict: str
    action: str = "none"
    signatures: list[str] = field(default_factory=list)
    reason: str | None = None
    definitions: dict[str, Any] = field(default_factory=dict)
    execution: dict[str, Any] = field(default_factory=dict)
    audited: bool = False
    notification: dict[str, Any] | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "key": self.key,
            "verdict": self.verdict,
            "reason": self.reason,
            "action": self.action,
            "signatures": self.signatures,
            "definitions": self.definitions,
            "execution": self.execution,
            "audited": self.audited,
            "notification": self.notification,
            "error": self.error,
        }


@dataclass(frozen=True)
class DefinitionsChoice:
    directory: Path
    description: str


_KINDS = (
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISSOCK, "socket"),
)


def _problem(path: Path, inside_directory: bool) -> str | None:
    """None for a regular file (or a link to one); otherwise what it is, in words."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not UTF-8 (S3 keys are)"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as err:
        return f"cannot read: {err.strerror or err}"
    if stat.S_ISLNK(mode):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return "dangling symlink"
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "symlink loop"
            return f"cannot read: {err.strerror or err}"
        if stat.S_ISDIR(mode) and inside_directory:
            return "not a regular file: symlink to a directory (not followed)"
    if stat.S_ISREG(mode) or (stat.S_ISDIR(mode) and not inside_directory):
        return None
    for test, kind in _KINDS:
        if test(mode):
            return f"not a regular file: {kind}"
    return "not a regular file"


def collect(paths: list[Path]) -> list[Target]:
    """What the arguments hold: every regular file under them (keys relative to each
    argument), and every other entry as a target with a ``problem``, never silently
    left out. A directory's own symlinks to directories are not followed."""
    targets: list[Target] = []
    for path in paths:
        problem = _problem(path, inside_directory=False)
        if problem is not None:
            targets.append(Target(path, path.name or str(path), problem))
        elif path.is_dir():
            targets += _walk(path)
        else:
            targets.append(Target(path, path.name))
    return targets


def _walk(root: Path) -> list[Target]:
    found: list[Target] = []

    def unreadable(err: OSError) -> None:  # a directory os.walk cannot list
        path = Path(err.filename or root)
        key = path.relative_to(root).as_posix() if path != root else path.name
        found.append(Target(path, key, f"cannot read: {err.strerror or err}"))

    for directory, subdirectories, files in os.walk(root, onerror=unreadable, followlinks=False):
        here = Path(directory)
        subdirectories.sort()
        # os.walk lists symlinks to directories with the subdirectories (and does not
        # enter them); they get a row like any other entry that is not scanned.
        names = sorted(files + [d for d in subdirectories if (here / d).is_symlink()])
        for name in names:
            path = here / name
            found.append(Target(path, path.relative_to(root).as_posix(), _problem(path, True)))
    return found


def choose_definitions(requested: Path | None, scratch: Path) -> DefinitionsChoice:
    from functions.shared.definitions import database_files

    if requested is not None:
        if not requested.is_dir() or not database_files(requested):
            raise FileNotFoundError(f"{requested} holds no ClamAV database files")
        return DefinitionsChoice(requested, f"{requested} (--definitions)")
    if SYSTEM_DATABASE.is_dir() and any(
        p.suffix in (".cvd", ".cld") for p in SYSTEM_DATABASE.iterdir()
    ):
        return DefinitionsChoice(SYSTEM_DATABASE, f"{SYSTEM_DATABASE} (freshclam's database)")
    directory = samples.write_test_set(scratch / "test-signatures")
    return DefinitionsChoice(
        directory,
        "built-in TEST signatures only (EICAR and ClamAV's test file); "
        "this is not real malware protection: use --definitions or run freshclam",
    )


def _chunks(items: list[Target], size: int) -> Iterator[list[Target]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: stop, report what finished, exit with ``status``."""

    def __init__(self, status: int = 130) -> None:
        super().__init__(status)
        self.status = status


_stop_requested: list[Interrupted] = []


def request_stop(status: int) -> Interrupted:
    """Remember a stop (from a signal handler) and return the exception to raise.

    Raising alone is not enough: moto's S3 notification code catches every
    exception, so a Ctrl-C landing there would vanish (and take that upload's
    event with it). The run checks the remembered stop between files.
    """
    stop = Interrupted(status)
    _stop_requested.append(stop)
    return stop


def check_stop() -> None:
    """Raise the stop a signal asked for, if one did (see ``request_stop``)."""
    if _stop_requested:
        raise _stop_requested[0]


@dataclass
class LocalRun:
    results: list[FileResult]
    interrupted: Interrupted | None = None


def run_local(
    targets: list[Target],
    definitions: DefinitionsChoice,
    *,
    quarantine: bool = True,
    webhook_url: str | None = None,
    on_progress: Callable[[int], None] = lambda n: None,
    work_dir: Path | None = None,
) -> LocalRun:
    """Scan the targets; on Ctrl-C (or SIGTERM, raised as ``Interrupted``) stop the
    executions in flight and return what finished, the temporary files removed."""
    from functions.scan_object.app import reset_scanner

    if not targets:
        raise NothingToScan
    _stop_requested.clear()
    run = LocalRun(results=[])
    manifest: dict[str, Any] = {}
    if all(target.problem for target in targets):  # nothing to upload: no pipeline needed
        run.results = [_error(target, str(target.problem)) for target in targets]
        return run
    with tempfile.TemporaryDirectory(prefix="scanctl-") as tmp:
        options = HarnessOptions(
            work_dir=work_dir or Path(tmp) / "clamav",
            quarantine=quarantine,
            webhook_url=webhook_url,
            # Metrics are off locally unless asked for; on, they go to stderr.
            extra_env={
                k: os.environ[k] for k in ("POWERTOOLS_METRICS_DISABLED",) if k in os.environ
            },
        )
        try:
            with LocalScanner(options) as harness:
                try:
                    manifest = harness.publish_definitions(definitions.directory)
                    harness.drain()  # S3's test event
                    _scan_all(harness, targets, on_progress, run.results)
                    _mark_audited(harness, run.results)
                    check_stop()
                except KeyboardInterrupt as stop:
                    run.interrupted = stop if isinstance(stop, Interrupted) else Interrupted()
                    harness.abandon()  # stop what is still running; do not wait for it
        except KeyboardInterrupt as stop:  # a second Ctrl-C while shutting down
            run.interrupted = run.interrupted or Interrupted(getattr(stop, "status", 130))
        finally:
            reset_scanner()  # stop clamd before its directory goes
    for result in run.results:
        result.definitions.setdefault("version", manifest.get("version"))
    order = {target.path: i for i, target in enumerate(targets)}
    run.results.sort(key=lambda r: order.get(Path(r.file), len(order)))
    return run


def _scan_all(
    harness: LocalScanner,
    targets: list[Target],
    on_progress: Callable[[int], None],
    results: list[FileResult],
) -> None:
    for chunk in _chunks(targets, BATCH):
        by_version: dict[str, Target] = {}
        sizes = 0
        for target in chunk:
            if target.problem is not None:
                results.append(_error(target, target.problem))
                continue
            check_stop()
            try:
                size = target.path.stat().st_size
                version = harness.upload_file(target.key, target.path)["VersionId"]
                by_version[version] = target  # (after every step that can fail: one row)
                sizes += size
            except OSError as err:
                results.append(_error(target, f"cannot read: {err.strerror or err}"))
            except Exception as err:  # noqa: BLE001 - one file's problem is its own row
                results.append(_error(target, f"cannot upload: {err}"))
        # Generous: a minute, plus time to scan what was uploaded at 2 MiB/s.
        timeout_s = 60 + len(chunk) + sizes / (2 << 20)
        check_stop()
        for name in harness.drain():
            check_stop()
            try:
                [report] = harness.wait([name], timeout_s=timeout_s)
            except TimeoutError:
                continue  # its file gets the row below: nothing is left out
            target = by_version.pop(report.input.get("object", {}).get("versionId"), None)
            if target is not None:
                results.append(_result(target, report))
        for target in by_version.values():
            # Uploaded, but no execution started (its notification failed): never
            # leave a file out of the results, and never count it as clean.
            results.append(
                _error(target, "no scan finished for this upload (see the DLQ and the executions)")
            )
        check_stop()
        on_progress(len(chunk))


def _error(target: Target, why: str) -> FileResult:
    return FileResult(
        file=printable(str(target.path)), key=printable(target.key), verdict="error", error=why
    )


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 shown as \\xNN, not a crash."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _result(target: Target, report: ExecutionReport) -> FileResult:
    output = report.output
    scan = output.get("scan") or {}
    definitions = output.get("definitions") or {}
    verdict = scan.get("verdict", "error") if report.status == "SUCCEEDED" else "error"
    return FileResult(
        file=str(target.path),
        key=target.key,
        verdict=verdict,
        reason=scan.get("reason"),
        action=(output.get("action") or {}).get("action", "none"),
        signatures=list(scan.get("signatures") or []),
        definitions={
            "version": scan.get("definitionsVersion") or definitions.get("version"),
            "source": definitions.get("source"),
        },
        execution={"name": report.name, "status": report.status, "states": report.states},
        notification=output.get("notification"),
        error=report.error if report.status != "SUCCEEDED" else None,
    )


def _mark_audited(harness: LocalScanner, results: list[FileResult]) -> None:
    ddb = harness.client("dynamodb")
    names = set()
    for page in ddb.get_paginator("scan").paginate(
        TableName=harness.options.table_name, ProjectionExpression="executionName"
    ):
        # Items without one (the CDN lease) are no scan's.
        names |= {item["executionName"]["S"] for item in page["Items"] if "executionName" in item}
    for result in results:
        result.audited = result.execution.get("name") in names


def exit_status(results: list[FileResult]) -> int:
    """Like clamscan: 1 if anything was found or could not be scanned, else 2 on errors."""
    if any(r.verdict in ("infected", "unscannable") for r in results):
        return 1
    if any(r.verdict == "error" for r in results):
        return 2
    return 0
