"""Run ClamAV's freshclam into a directory we choose, with a generated configuration.

Used by the scheduled updater (which publishes the result to the cache) and by
the scanner's fallback when the cache is unavailable. ``PrivateMirror`` serves
organisations that mirror ClamAV; with one set, freshclam skips the DNS version
check, so nothing but that mirror is contacted.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from functions.shared.definitions import database_files


class FreshclamFailed(Exception):
    """freshclam ended without a usable database; ``tail`` is its last output."""

    def __init__(self, message: str, tail: str) -> None:
        super().__init__(f"{message}: {tail}" if tail else message)
        self.tail = tail


# freshclam keeps its client UUID and its CDN cool-down in this file, in its
# DatabaseDirectory (ClamAV 1.x, libfreshclam): the 13 bytes "FreshClamData",
# then ``struct { uint32_t version; char uuid[37]; time_t retry_after; }``
# (x86_64: retry_after, little-endian int64, at +48 of the struct), then the
# last cf-ray id. A 429 sets retry_after to now + Retry-After (4 hours without
# one), a 403 to now + 24 hours; until then freshclam makes no request and
# exits 0 ("You are still on cool-down"). Its exit status does not tell a
# cool-down (0 for a 429 on a download; not 0 for a 403, or for a 429 on the
# header probe, which 1.4 then reports as a malformed header): this file does.
FRESHCLAM_DAT = "freshclam.dat"
_DAT_MAGIC = b"FreshClamData"
_RETRY_AFTER_OFFSET = len(_DAT_MAGIC) + 48


# ClamAV's CDN asks for hours (Retry-After, 4 h without one, 24 h for a 403). A
# retry_after further out than this is not ClamAV's: a damaged or hand-made file
# that freshclam would obey for ever, silently. It is cut to this (the updater
# reports the cool-down, so its alarm fires, and updates resume by then).
MAX_COOL_DOWN = dt.timedelta(days=7)


def retry_after(directory: Path, now: dt.datetime | None = None) -> dt.datetime | None:
    """Until when freshclam's state in ``directory`` holds it on cool-down; ``None``
    without one (no file, one freshclam would not read either, or no cool-down set).

    A value beyond ``MAX_COOL_DOWN`` (or past what a date can hold) is cut to it,
    in the file too, so freshclam waits no longer than we report.
    """
    path = directory / FRESHCLAM_DAT
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not is_freshclam_state(data):
        return None
    (seconds,) = struct.unpack_from("<q", data, _RETRY_AFTER_OFFSET)
    if seconds <= 0:
        return None
    latest = (now or dt.datetime.now(dt.UTC)) + MAX_COOL_DOWN
    try:
        until = dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (OverflowError, OSError, ValueError):
        until = dt.datetime.max.replace(tzinfo=dt.UTC)
    if until <= latest:
        return until
    cut = bytearray(data)
    struct.pack_into("<q", cut, _RETRY_AFTER_OFFSET, int(latest.timestamp()))
    path.write_bytes(bytes(cut))
    return latest.replace(microsecond=0)


def is_freshclam_state(data: bytes) -> bool:
    """Whether ``data`` is a freshclam.dat freshclam would read (not something else)."""
    return data.startswith(_DAT_MAGIC) and len(data) >= _RETRY_AFTER_OFFSET + 8


# What a set from freshclam must hold to scan with: ClamAV's two signature
# databases (bytecode.cvd is optional: ClamAV scans without it).
REQUIRED_DATABASES = ("main", "daily")


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
    present = {p.stem for p in files if p.suffix in (".cvd", ".cld")}
    if missing := [name for name in REQUIRED_DATABASES if name not in present]:
        # freshclam 1.4 answers a 429 on one database by moving on to the next and
        # exiting 0: a set without main (or daily) is not a set to scan with.
        raise FreshclamFailed(f"freshclam left no {' or '.join(missing)} database", tail)
    return files
