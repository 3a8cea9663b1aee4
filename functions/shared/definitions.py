"""The definitions cache: ``<prefix>/db.tar`` plus ``<prefix>/manifest.json``.

One publisher writes it (the scheduled updater, the local tools and the tests
all go through ``publish_directory``); the scanner streams the tarball through
its sha256 and a safe extraction into a staging directory that is used only
when the digest matches.

The tarball is not compressed: the official ``.cvd`` files are compressed
already, so gzip saved almost nothing on them and cost every cold start a
decompression (0.8 s of the 0.9 s fetch on the benchmark's 180 MB set).
The scanner still reads a compressed tarball an older version published.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from botocore.exceptions import ClientError

from functions.shared.aws import GONE_CODES, error_code
from functions.shared.clock import utc_now_iso
from functions.shared.errors import DefinitionsCorrupt, ScanEngineUnavailable

TARBALL_NAME = "db.tar"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

# Every database and configuration file type clamd loads from its directory.
DATABASE_SUFFIXES = frozenset(
    {
        ".cvd", ".cld", ".cud", ".hdb", ".hsb", ".hdu", ".hsu", ".mdb", ".msb",
        ".mdu", ".msu", ".ndb", ".ndu", ".ldb", ".ldu", ".idb", ".cdb", ".crb",
        ".cbc", ".pdb", ".gdb", ".wdb", ".ftm", ".fp", ".sfp", ".ign", ".ign2",
        ".info", ".cfg", ".yar", ".yara", ".pwdb", ".ioc", ".sign",
    }
)  # fmt: skip


def keys(prefix: str) -> tuple[str, str]:
    prefix = prefix.strip("/")
    return f"{prefix}/{TARBALL_NAME}", f"{prefix}/{MANIFEST_NAME}"


def database_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in DATABASE_SUFFIXES
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_SIGTOOL_FIELD = re.compile(r"^(Version|Signatures|Build time):\s*(.+)$", re.MULTILINE)


def _count_signatures(path: Path) -> int | None:
    """Signature lines in a plain-text database; ``None`` when not countable."""
    if path.suffix.lower() in {".cvd", ".cld", ".cud", ".info", ".cfg", ".ign", ".ign2", ".fp"}:
        return None
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip() and not line.startswith(b"#"))
    except OSError:
        return None


def describe_file(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": path.name,
        "size": path.stat().st_size,
        "sha256": _sha256_file(path),
        "version": None,
        "signatures": _count_signatures(path),
    }
    if path.suffix.lower() in {".cvd", ".cld", ".cud"} and shutil.which("sigtool"):
        out = subprocess.run(
            ["sigtool", "--info", str(path)], capture_output=True, text=True, check=False
        ).stdout
        fields = dict(_SIGTOOL_FIELD.findall(out))
        if fields.get("Version", "").strip().isdigit():
            info["version"] = int(fields["Version"])
        if fields.get("Signatures", "").strip().isdigit():
            info["signatures"] = int(fields["Signatures"])
    return info


def content_digest(files: list[dict[str, Any]]) -> str:
    """Identity of a database set: names and contents, not timestamps."""
    text = "\n".join(f"{f['name']} {f['sha256']}" for f in sorted(files, key=lambda f: f["name"]))
    return hashlib.sha256(text.encode()).hexdigest()


def definitions_version(files: list[dict[str, Any]], digest: str) -> str:
    """``daily-<n>.main-<n>-<hash>`` for official sets, ``custom-<hash>`` otherwise."""
    parts = []
    for base in ("main", "daily", "bytecode"):
        for f in files:
            if f["name"].rsplit(".", 1)[0] == base and f.get("version"):
                parts.append(f"{base}-{f['version']}")
    head = ".".join(parts) if parts else "custom"
    return f"{head}-{digest[:12]}"


class DefinitionsDoNotLoad(Exception):
    """ClamAV refuses to load the set (a malformed database, say)."""


def verify_loadable(directory: Path, clamscan: str = "clamscan", timeout_s: float = 600) -> None:
    """Load the set with ``clamscan`` and scan a harmless file, or raise DefinitionsDoNotLoad.

    A set whose sha256 matches its manifest but that clamd cannot load would
    break every scanner that switches to it; the updater checks before it
    publishes. (clamscan loads the whole set once, as clamd would.)
    """
    binary = shutil.which(clamscan)
    if not binary:
        raise DefinitionsDoNotLoad("clamscan is not installed")
    probe = directory.parent / f".{directory.name}.probe.txt"
    probe.write_bytes(b"s3-virus-scanner definitions probe\n")
    try:
        proc = subprocess.run(
            [binary, "--no-summary", f"--database={directory}", str(probe)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise DefinitionsDoNotLoad(f"clamscan did not load them in {timeout_s:.0f}s") from err
    finally:
        probe.unlink(missing_ok=True)
    if proc.returncode not in (0, 1):  # 0 clean, 1 found: the set loaded either way
        lines = (proc.stderr + proc.stdout).strip().splitlines()
        raise DefinitionsDoNotLoad(" | ".join(lines[-3:]) or f"clamscan exited {proc.returncode}")


def write_tarball(files: list[Path], out: BinaryIO) -> None:
    """A reproducible tar into ``out``, streamed: sorted members, zero timestamps,
    no owners (equal content, equal bytes), and nothing held in memory but a
    block at a time."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            member = tarfile.TarInfo(path.name)
            member.size = path.stat().st_size
            member.mode = 0o644
            member.mtime = 0
            with path.open("rb") as handle:
                tar.addfile(member, handle)


def build_tarball(directory: Path, files: list[Path]) -> bytes:
    """The same tarball, in memory (small sets, tests)."""
    raw = io.BytesIO()
    write_tarball(files, raw)
    return raw.getvalue()


def put_tarball(s3: Any, bucket: str, key: str, body: BinaryIO) -> str | None:
    """PutObject of the tarball (streamed from its file); the version id it got."""
    written = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-tar")
    return written.get("VersionId")


@dataclass(frozen=True)
class PublishResult:
    published: bool
    manifest: dict[str, Any]


def read_manifest(s3: Any, bucket: str, prefix: str) -> dict[str, Any] | None:
    """The current manifest, or ``None`` when there is none yet (404)."""
    _, manifest_key = keys(prefix)
    try:
        body = s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
    except ClientError as err:
        if error_code(err) in GONE_CODES:
            return None
        raise
    return json.loads(body)


def publish_directory(
    s3: Any,
    bucket: str,
    prefix: str,
    directory: Path,
    engine_version: str | None = None,
    upload: Callable[[Any, str, str, BinaryIO], str | None] | None = None,
    described: list[dict[str, Any]] | None = None,
) -> PublishResult:
    """Publish the ClamAV databases in ``directory`` to the cache.

    Writes the tarball first and the manifest last, so a reader never sees a
    manifest whose tarball is not there yet. Publishes nothing when the
    content equals what the current manifest describes. ``described``: the
    files' ``describe_file`` entries, when the caller has them already.
    """
    paths = database_files(directory)
    if not paths:
        raise ValueError(f"{directory} holds no ClamAV database files")
    files = described if described is not None else [describe_file(p) for p in paths]
    digest = content_digest(files)
    current = None
    try:
        current = read_manifest(s3, bucket, prefix)
    except (ValueError, KeyError):
        current = None  # unreadable: replace it
    if current and current.get("contentDigest") == digest:
        return PublishResult(published=False, manifest=current)
    tarball_key, manifest_key = keys(prefix)
    # The set can be hundreds of MB: built in a temporary file, hashed and uploaded
    # from there, never whole in memory.
    with tempfile.TemporaryFile() as tarball:
        write_tarball(paths, tarball)
        size = tarball.tell()
        tarball.seek(0)
        sha256 = hashlib.file_digest(tarball, "sha256").hexdigest()
        tarball.seek(0)
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": definitions_version(files, digest),
            "contentDigest": digest,
            "key": tarball_key,
            "sha256": sha256,
            "size": size,
            "createdAt": utc_now_iso(),
            "engineVersion": engine_version,
            "files": files,
            "signatures": sum(f["signatures"] or 0 for f in files),
        }
        # Readers fetch this exact version of the tarball: a publish that overwrites
        # the key while a scanner downloads cannot hand it a mismatching file.
        manifest["tarballVersionId"] = (upload or put_tarball)(s3, bucket, tarball_key, tarball)
    s3.put_object(
        Bucket=bucket,
        Key=manifest_key,
        Body=json.dumps(manifest, indent=2).encode(),
        ContentType="application/json",
        CacheControl="no-cache",
    )
    return PublishResult(published=True, manifest=manifest)


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if not member.isfile():
        raise DefinitionsCorrupt(f"tarball member {name!r} is not a regular file")
    if name != os.path.basename(name) or name in ("", ".", ".."):
        raise DefinitionsCorrupt(f"tarball member {name!r} is not a plain file name")
    if Path(name).suffix.lower() not in DATABASE_SUFFIXES:
        raise DefinitionsCorrupt(f"tarball member {name!r} is not a ClamAV database")


def safe_extract(tarball: Path | BinaryIO, target: Path) -> list[str]:
    """Extract regular files only, each directly inside ``target``, in one pass.

    ``tarball`` is a file, or a stream read once from start to end (the
    scanner extracts while it downloads).

    Each member is checked before a byte of it is written: links, devices,
    directories and names with a path are DefinitionsCorrupt, so nothing can
    land outside ``target``. On a rejected tarball the files already written
    are removed. One streaming pass (a plain tar, or gzip as older versions
    published it; nothing else); listing the members first would read it twice.
    """
    target.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            stream = (
                stack.enter_context(tarball.open("rb")) if isinstance(tarball, Path) else tarball
            )
            head = stream.read(2)
            # Only what a publisher of ours wrote: plain tar, or gzip (older versions).
            mode = "r|gz" if head == b"\x1f\x8b" else "r|"
            tar = stack.enter_context(
                tarfile.open(fileobj=_Prefixed(head, stream), mode=mode, bufsize=1 << 20)
            )
            for member in tar:
                _check_member(member)
                source = tar.extractfile(member)
                assert source is not None  # regular files always have content
                names.append(member.name)
                with source, (target / member.name).open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
        return names
    except OSError as err:
        _remove(target, names)
        if err.errno == errno.ENOSPC:
            # Not the tarball's fault: this container's /tmp is full. Transient:
            # a retry may land in another container.
            raise ScanEngineUnavailable(f"no space left to extract definitions: {err}") from err
        raise DefinitionsCorrupt(f"definitions tarball cannot be read: {err}") from err
    except (tarfile.TarError, EOFError) as err:
        _remove(target, names)
        raise DefinitionsCorrupt(f"definitions tarball cannot be read: {err}") from err
    except DefinitionsCorrupt:
        _remove(target, names)
        raise


class _Prefixed:
    """A read-once stream with its first bytes, already read, put back in front."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self.head, self.rest = head, rest

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.rest.read(size)
        if size < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        return data if len(data) == size else data + self.rest.read(size - len(data))


def _remove(target: Path, names: list[str]) -> None:
    for name in names:
        (target / name).unlink(missing_ok=True)
