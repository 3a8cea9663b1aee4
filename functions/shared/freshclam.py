"""Run ClamAV's freshclam into a directory we choose, with a generated configuration.

Used by the scheduled updater (which publishes the result to the cache) and by
the scanner's fallback when the cache is unavailable. ``PrivateMirror`` serves
organisations that mirror ClamAV; with one set, freshclam skips the DNS version
check, so nothing but that mirror is contacted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from functions.shared.definitions import database_files


class FreshclamFailed(Exception):
    """freshclam ended without a usable database; ``tail`` is its last output."""

    def __init__(self, message: str, tail: str) -> None:
        super().__init__(f"{message}: {tail}" if tail else message)
        self.tail = tail


@dataclass(frozen=True)
class FreshclamSettings:
    database_mirror: str = "database.clamav.net"
    private_mirror: str | None = None
    timeout_s: float = 600.0
    connect_timeout_s: int = 30
    receive_timeout_s: int = 600
    attempts: int = 3


def config_text(directory: Path, settings: FreshclamSettings) -> str:
    lines = [
        f"DatabaseDirectory {directory}",
        "Foreground yes",
        "Checks 1",
        f"MaxAttempts {settings.attempts}",
        f"ConnectTimeout {settings.connect_timeout_s}",
        f"ReceiveTimeout {settings.receive_timeout_s}",
        # Load what was downloaded before declaring success.
        "TestDatabases yes",
        "Bytecode yes",
        "LogTime yes",
    ]
    if os.geteuid() == 0:
        # As root, freshclam drops to DatabaseOwner (default: clamav), who cannot
        # write our directory. Lambda runs as an unprivileged user that may have
        # no passwd entry at all, so the option is set only here.
        lines.append("DatabaseOwner root")
    if settings.private_mirror:
        lines += [
            f"PrivateMirror {settings.private_mirror}",
            "DNSDatabaseInfo no",
            "ScriptedUpdates no",
        ]
    else:
        lines += [f"DatabaseMirror {settings.database_mirror}"]
    return "\n".join(lines) + "\n"


def run_freshclam(
    directory: Path, settings: FreshclamSettings, freshclam: str = "freshclam"
) -> list[Path]:
    """Update ``directory`` in place (incrementally, if it already holds a database).

    Returns the database files; raises FreshclamFailed when freshclam fails or
    leaves no database behind.
    """
    binary = shutil.which(freshclam)
    if not binary:
        raise FreshclamFailed("freshclam is not installed", "")
    directory.mkdir(parents=True, exist_ok=True)
    config = directory.parent / f"{directory.name}.freshclam.conf"
    config.write_text(config_text(directory, settings))
    try:
        proc = subprocess.run(
            [binary, f"--config-file={config}", "--stdout"],
            capture_output=True,
            text=True,
            timeout=settings.timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise FreshclamFailed(f"freshclam did not finish in {settings.timeout_s:.0f}s", "") from err
    finally:
        config.unlink(missing_ok=True)
    output = (proc.stdout + proc.stderr).strip().splitlines()
    tail = " | ".join(line.strip() for line in output[-4:])
    files = database_files(directory)
    if proc.returncode != 0:  # 0: updated, or already up to date
        raise FreshclamFailed(f"freshclam exited with status {proc.returncode}", tail)
    if not any(p.suffix in (".cvd", ".cld") for p in files):
        raise FreshclamFailed("freshclam left no .cvd/.cld database", tail)
    return files
