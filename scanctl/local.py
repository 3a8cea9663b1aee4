"""`scanctl local`: the whole pipeline on this machine, through the local harness."""

from __future__ import annotations

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


def collect(paths: list[Path]) -> list[Target]:
    """Files under the arguments; keys are paths relative to each argument.

    Raises FileNotFoundError for an argument that does not exist.
    """
    targets: list[Target] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(str(path))
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink()):
                if file.is_symlink() and not file.exists():
                    continue
                targets.append(Target(file, file.relative_to(path).as_posix()))
        else:
            targets.append(Target(path, path.name))
    return targets


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


def run_local(
    targets: list[Target],
    definitions: DefinitionsChoice,
    *,
    quarantine: bool = True,
    webhook_url: str | None = None,
    on_progress: Callable[[int], None] = lambda n: None,
    work_dir: Path | None = None,
) -> list[FileResult]:
    if not targets:
        raise NothingToScan
    with tempfile.TemporaryDirectory(prefix="scanctl-") as tmp:
        options = HarnessOptions(
            work_dir=work_dir or Path(tmp) / "clamav",
            quarantine=quarantine,
            webhook_url=webhook_url,
        )
        with LocalScanner(options) as harness:
            manifest = harness.publish_definitions(definitions.directory)
            harness.drain()  # S3's test event
            results = _scan_all(harness, targets, on_progress)
            _mark_audited(harness, results)
    for result in results:
        result.definitions.setdefault("version", manifest["version"])
    order = {target.path: i for i, target in enumerate(targets)}
    results.sort(key=lambda r: order.get(Path(r.file), len(order)))
    return results


def _scan_all(
    harness: LocalScanner, targets: list[Target], on_progress: Callable[[int], None]
) -> list[FileResult]:
    results: list[FileResult] = []
    for chunk in _chunks(targets, BATCH):
        by_version: dict[str, Target] = {}
        for target in chunk:
            try:
                body = target.path.read_bytes()
            except OSError as err:
                results.append(
                    FileResult(
                        file=str(target.path),
                        key=target.key,
                        verdict="error",
                        error=f"cannot read: {err.strerror or err}",
                    )
                )
                continue
            version = harness.upload(target.key, body)["VersionId"]
            by_version[version] = target
        for report in harness.wait(harness.drain()):
            target = by_version.pop(report.input.get("object", {}).get("versionId"), None)
            if target is not None:
                results.append(_result(target, report))
        for target in by_version.values():
            # Uploaded, but no execution started (its notification failed): never
            # leave a file out of the results, and never count it as clean.
            results.append(
                FileResult(
                    file=str(target.path),
                    key=target.key,
                    verdict="error",
                    error="no scan was started for this upload (see the DLQ)",
                )
            )
        on_progress(len(chunk))
    return results


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
        names |= {item["executionName"]["S"] for item in page["Items"]}
    for result in results:
        result.audited = result.execution.get("name") in names


def exit_status(results: list[FileResult]) -> int:
    """Like clamscan: 1 if anything was found or could not be scanned, else 2 on errors."""
    if any(r.verdict in ("infected", "unscannable") for r in results):
        return 1
    if any(r.verdict == "error" for r in results):
        return 2
    return 0
