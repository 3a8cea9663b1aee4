"""Our own unpacking, for what ClamAV cannot open.

clamd answers ``OK`` for content it could not unpack: a zip whose members are
compressed with PPMd, a 7z with BZip2, a bare ``.zst``, any RAR (Debian builds
ClamAV without unrar). After clamd's own scan of an object, the scanner asks
libarchive whether the object is an archive or a compressed stream; if it is,
this extracts it, bounded, into a directory of its own, recursing into
members that are themselves archives, and clamd scans that directory too.

Safety, by construction:

- only the formats and filters listed here are enabled (never ``mtree``, whose
  entries name files on the local disk for libarchive to read, never a filter
  that runs an outside program, and never ``all``); ``raw`` only so a bare
  compressed stream is read, and a "raw" read without a decompression filter
  is a plain file, not an archive;
- nothing from the archive becomes a file name: members are written as
  numbered files in one flat directory, so no path can leave it; links,
  directories and devices are never created; the member's name is kept only
  as a label (control characters removed) for the signature report;
- every byte written counts against ``MaxScanSize``, every member against
  ``MaxFiles``, every nesting level against ``MaxRecursion``: hitting one
  stops the extraction and makes the object ``limits-exceeded``;
- an encrypted member is ``encrypted``; an archive libarchive recognised but
  could not read to the end is ``archive-unreadable``: neither is ever ``clean``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import struct
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from libarchive import ffi
from libarchive.entry import ArchiveEntry
from libarchive.exception import ArchiveError

FORMATS = (
    "zip",
    "7zip",
    "rar",
    "rar5",
    "tar",
    "cpio",
    "iso9660",
    "cab",
    "ar",
    "xar",
    "lha",
    "warc",
)
FILTERS = ("gzip", "bzip2", "xz", "lzma", "zstd", "lz4", "lzip", "compress", "rpm", "uu")
# Compressions libarchive reads only by running an outside program (lzop without
# liblzo2, as Debian builds it; lrzip; grzip): never enabled, and never plain
# either: neither ClamAV nor we can read what is inside.
_UNREADABLE_MAGIC = (b"\x89LZO\x00\r\n\x1a\n", b"LRZI", b"GRZipII\x00")
# A zip whose central directory is damaged reads as empty with the seekable
# reader; the streaming one walks the local headers instead.
_ZIP_STREAMING = ("zip_streamable",)
_BLOCK = 1 << 20
# A member ClamAV already read is kept in memory, not written, when it is this
# small: only to see whether it nests an archive.
_IN_MEMORY = 4 << 20
_LABEL_MAX = 200


class Problem:
    """Why unpacked content could not all be scanned (an UnscannableReason value)."""

    LIMITS = "limits-exceeded"
    ENCRYPTED = "encrypted"
    # Damaged, truncated, or a method neither ClamAV nor libarchive reads.
    UNREADABLE = "archive-unreadable"


@dataclass(frozen=True)
class UnpackLimits:
    max_bytes: int  # MaxScanSize: everything written, all levels together
    max_file_bytes: int  # MaxFileSize: one member
    max_files: int  # MaxFiles
    max_depth: int  # MaxRecursion


@dataclass
class Unpacked:
    """What the extraction found, and what it left under ``root`` for clamd.

    ``labels``: file name under ``root`` -> the member's path in the object,
    for the members ClamAV's own unpacking did not reach.
    """

    root: Path
    labels: dict[str, str] = field(default_factory=dict)
    archives: int = 0
    members: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "archives": self.archives,
            "members": self.members,
            "bytes": self.bytes,
            "rescanned": len(self.labels),
        }


class _Stop(Exception):
    """A limit was hit: extraction ends, the object is limits-exceeded."""


# -- libarchive, through the binding and the few functions it does not declare ----------

_lib = ffi.libarchive


def _declare(name: str, argtypes: list, restype: type) -> object:
    function = getattr(_lib, f"archive_{name}")
    function.argtypes, function.restype = argtypes, restype
    return function


_entry_is_data_encrypted = _declare("entry_is_data_encrypted", [ctypes.c_void_p], ctypes.c_int)
_entry_is_metadata_encrypted = _declare(
    "entry_is_metadata_encrypted", [ctypes.c_void_p], ctypes.c_int
)
_filter_code = _declare("filter_code", [ctypes.c_void_p, ctypes.c_int], ctypes.c_int)
# Without the binding's errcheck: a negative answer is an error, never data.
_read_data = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
    ("archive_read_data", _lib)
)
_FILTER_NONE = 0


@contextlib.contextmanager
def _reader(
    source: Path | bytes, formats: tuple[str, ...], raw: bool, filters: tuple[str, ...] = FILTERS
) -> Iterator[object]:
    handle = ffi.read_new()
    try:
        for name in filters:
            ffi.get_read_filter_function(name)(handle)
        for name in formats:
            ffi.get_read_format_function(name)(handle)
        if raw:
            ffi.get_read_format_function("raw")(handle)
        if isinstance(source, bytes):
            ffi.read_open_memory(handle, ctypes.cast(source, ctypes.c_void_p), len(source))
        else:
            ffi.read_open_filename_w(handle, str(source), 1 << 16)
        yield handle
    finally:
        ffi.read_free(handle)


def recognise(source: Path | bytes) -> str | None:
    """The archive format or compression libarchive sees (in a file, or bytes); None if plain."""
    head = source[:16] if isinstance(source, bytes) else _head(source)
    if head.startswith(_UNREADABLE_MAGIC):
        return "unreadable"
    try:
        with _reader(source, FORMATS, raw=True) as handle:
            entry = ArchiveEntry(handle, "utf-8")
            if ffi.read_next_header2(handle, entry._entry_p) == ffi.ARCHIVE_EOF:
                return _format_name(handle) or "empty"
            name = _format_name(handle) or "archive"  # WARC's reader names none
            if name == "raw":
                if _filter_code(handle, 0) == _FILTER_NONE:
                    return None  # read as-is: a plain file
                return _filters(handle)[0]
            return name
    except ArchiveError as err:
        if "Unrecognized archive format" in str(err.msg or ""):
            return None
        # Recognised (a format or filter bid for it) but broken at the start. The
        # readers with weak marks (two bytes for compress, a "begin" line for uu,
        # an LHA header found inside an executable, "WARC/" text) bid on plain
        # files too: if only they recognised it and cannot read it, it is plain.
        if not _strongly_recognised(source):
            return None
        return "unreadable"


# Readers that bid on a few bytes any plain file may hold.
_WEAK_FORMATS = ("lha", "warc")
_WEAK_FILTERS = ("compress", "uu")


def _strongly_recognised(source: Path | bytes) -> bool:
    formats = tuple(f for f in FORMATS if f not in _WEAK_FORMATS)
    filters = tuple(f for f in FILTERS if f not in _WEAK_FILTERS)
    try:
        with _reader(source, formats, raw=True, filters=filters) as handle:
            entry = ArchiveEntry(handle, "utf-8")
            ffi.read_next_header2(handle, entry._entry_p)
            return _filter_code(handle, 0) != _FILTER_NONE or _format_name(handle) != "raw"
    except ArchiveError as err:
        return "Unrecognized archive format" not in str(err.msg or "")


# -- extraction -------------------------------------------------------------------------


def unpack(path: Path, root: Path, limits: UnpackLimits) -> Unpacked:
    """Extract ``path`` (an archive or compressed stream) and what it nests, into ``root``.

    ClamAV has already scanned the object itself. A member ClamAV's own
    unpacking reached (its container and compression are ones ClamAV reads,
    all the way up) is not kept for a second scan; it is still opened if it
    is itself an archive, since what it nests may not be.
    """
    root.mkdir(parents=True, exist_ok=True)
    out = Unpacked(root=root)
    try:
        _unpack(path, "", 1, out, limits, reached=True)
    except _Stop:
        out.problems.append(Problem.LIMITS)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        # /tmp is full: more than this container can hold is more than MaxScanSize allows.
        out.problems.append(Problem.LIMITS)
    return out


def _unpack(
    path: Path, prefix: str, depth: int, out: Unpacked, limits: UnpackLimits, reached: bool
) -> None:
    if depth > limits.max_depth:
        raise _Stop
    head = _head(path)
    if head.startswith(_UNREADABLE_MAGIC):
        out.problems.append(Problem.UNREADABLE)
        return
    out.archives += 1
    before = len(out.problems)
    listed = _members(path, prefix, depth, out, limits, FORMATS, reached)
    if head[:4] in _ZIP_MAGIC and (
        Counter(_names(path, limits)) - Counter(listed) or _entries_overlap(path)
    ):
        # Entries the central directory does not list (or a damaged one that
        # lists none), or a listed entry inside another's data, which may shadow
        # one it leaves out under the same name: ClamAV and the seekable reader go
        # by the directory, a streaming extractor by the local headers. Read it as
        # those do.
        _members(path, prefix, depth, out, limits, _ZIP_STREAMING, reached=False)
    if Problem.UNREADABLE in out.problems[before:] and _compressed(path):
        # A format that must seek (7z, a zip's central directory) cannot be
        # read through a compressed stream: decompress the stream first, then
        # open what came out. Its verdict replaces the first attempt's.
        del out.problems[before:]
        _members(path, prefix, depth, out, limits, (), reached=False)
    if head.startswith(_RAR5_SIGNATURE) and _rar5_encrypted(path):
        # libarchive 3.6 neither decrypts RAR5 nor says it is encrypted: it
        # hands back ciphertext as if it were content.
        out.problems.append(Problem.ENCRYPTED)


def _names(path: Path, limits: UnpackLimits) -> list[str]:
    """The entries' names by a zip's local headers, as a streaming extractor finds
    them (data skipped); no more than MaxFiles and one."""
    names: list[str] = []
    with contextlib.suppress(ArchiveError), _reader(path, _ZIP_STREAMING, raw=False) as handle:
        entry = ArchiveEntry(handle, "utf-8")
        while len(names) <= limits.max_files:
            if ffi.read_next_header2(handle, entry._entry_p) == ffi.ARCHIVE_EOF:
                break
            names.append(_pathname(entry))
    return names


def _entries_overlap(path: Path) -> bool:
    """Does an entry the central directory lists start inside another's local header
    and data? (Never in a zip a tool wrote; a directory that cannot be read says no:
    the names above decide.)"""
    spans = []
    try:
        with zipfile.ZipFile(path) as archive, path.open("rb") as raw:
            for info in archive.infolist():
                raw.seek(info.header_offset)
                local = raw.read(30)
                if len(local) < 30:
                    return True
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                start = info.header_offset
                spans.append((start, start + 30 + name_len + extra_len + info.compress_size))
    except (zipfile.BadZipFile, OSError, ValueError, struct.error):
        return False
    spans.sort()
    return any(start < end for (_, end), (start, _) in itertools.pairwise(spans))


def _compressed(path: Path) -> bool:
    try:
        with _reader(path, (), raw=True) as handle:
            entry = ArchiveEntry(handle, "utf-8")
            ffi.read_next_header2(handle, entry._entry_p)
            return _filter_code(handle, 0) != _FILTER_NONE
    except ArchiveError:
        return False


def clamav_reads(format_name: str, filters: list[str]) -> bool:
    """Does ClamAV's own unpacking read all of this member (container, compression)?

    Only what tests/integration/test_deep_unpack.py shows ClamAV (Debian's
    1.4.6) reading to the end: zip members stored, deflated or Deflate64 (not
    LZMA: 7-Zip's is read, Python's is not, and libarchive tells the two apart
    no better than "lzma"); bare gzip and xz streams. Everything else is
    scanned again after our extraction, tar and bzip2 included: ClamAV stops
    reading a tar at a header with an empty name where tar, bsdtar and Python
    read on, and stops a bzip2 stream at its first end where bunzip2 reads the
    next.
    """
    if any(f not in ("none", "gzip", "xz") for f in filters):
        return False
    if format_name in ("raw",):
        return True  # a bare gzip/xz stream
    if format_name.startswith("ZIP"):
        method = format_name.rsplit("(", 1)[-1].rstrip(")")
        return not [f for f in filters if f != "none"] and method in (
            "uncompressed",
            "deflation",
            "deflation-64-bit",
        )
    return False


def _members(
    path: Path,
    prefix: str,
    depth: int,
    out: Unpacked,
    limits: UnpackLimits,
    formats: tuple[str, ...],
    reached: bool,
) -> list[str]:
    """Write each member of one archive; returns the names of the entries it read.

    ``reached``: ClamAV's own unpacking got to this archive (the object
    itself, or a member of archives ClamAV reads).
    """
    seen: list[str] = []
    buffer = ctypes.create_string_buffer(_BLOCK)
    try:
        with _reader(path, formats, raw=True) as handle:
            while True:
                entry = ArchiveEntry(handle, "utf-8")
                if ffi.read_next_header2(handle, entry._entry_p) == ffi.ARCHIVE_EOF:
                    return seen
                seen.append(_pathname(entry))
                if len(seen) == 1 and depth + len(_filters(handle)) - 1 > limits.max_depth:
                    # Each compression layer is a level, as ClamAV counts them:
                    # libarchive peels a stack of twenty .zst in one go.
                    raise _Stop
                if _entry_is_metadata_encrypted(entry._entry_p):
                    out.problems.append(Problem.ENCRYPTED)
                    return seen
                if not entry.isreg:
                    continue  # directories, links, devices: nothing to scan, never created
                label = _label(prefix, entry, handle)
                if _entry_is_data_encrypted(entry._entry_p):
                    out.problems.append(Problem.ENCRYPTED)
                    continue  # never read: libarchive would hand back ciphertext (RAR4)
                if out.members >= limits.max_files:
                    raise _Stop
                out.members += 1
                covered = reached and clamav_reads(_format_name(handle), _filters(handle))
                target = out.root / f"{out.members:06d}"
                kind = None
                try:
                    if covered and (entry.size or 0) <= _IN_MEMORY:
                        # ClamAV read it already: keep it only if it nests something.
                        data = _read_all(handle, buffer, out, limits)
                        kind = recognise(data)
                        if kind is None:
                            continue
                        target.write_bytes(data)
                    else:
                        _copy(handle, buffer, target, out, limits)
                except ArchiveError as err:
                    # clamd scans every archive file we open (the object, or a member
                    # written for it), not one libarchive reached through a compression
                    # filter, nor what its directory hides.
                    peeled = [f for f in _filters(handle) if f != "none"]
                    scanned = formats != _ZIP_STREAMING and not peeled
                    out.problems.extend(_problem(err, scanned=scanned))
                    target.unlink(missing_ok=True)
                    if err.retcode != ffi.ARCHIVE_FAILED:
                        return seen  # FATAL: nothing more can be read
                    continue  # only this member is lost
                if kind is not None or recognise(target) is not None:
                    _unpack(target, label, depth + 1, out, limits, reached=covered)
                if covered:
                    target.unlink()  # ClamAV scanned it already, inside the object
                else:
                    out.labels[target.name] = label
    except ArchiveError as err:
        if "Unrecognized archive format" in str(err.msg or ""):
            return seen  # not an archive after all
        out.problems.extend(_problem(err, scanned=False))
    return seen


def _format_name(handle: object) -> str:
    # Some readers (WARC) name no format: NULL, "".
    return (ffi.format_name(handle) or b"").decode(errors="replace")


def _filters(handle: object) -> list[str]:
    return [
        (ffi.filter_name(handle, i) or b"").decode(errors="replace")
        for i in range(ffi.filter_count(handle))
    ]


def _problem(err: ArchiveError, scanned: bool) -> list[str]:
    """What a libarchive error means for the verdict; ``scanned``: clamd's own
    unpacking reads the member it happened on (it is listed where clamd looks)."""
    message = str(err.msg or "").lower()
    if "encrypt" in message or "passphrase" in message:
        return [Problem.ENCRYPTED]
    if "deflation-64-bit" in message and scanned:
        # Zip's Deflate64, which libarchive cannot read and ClamAV's own
        # unpacking does: clamd scanned that member, in the zip it was given.
        return []
    return [Problem.UNREADABLE]


def _chunks(
    handle: object, buffer: ctypes.Array, out: Unpacked, limits: UnpackLimits
) -> Iterator[bytes]:
    """The current member's data, block by block, counted against the limits."""
    size = 0
    while True:
        read = _read_data(handle, buffer, _BLOCK)
        if read == 0:
            return
        if read < 0:
            raise ffi.archive_error(handle, read)
        size += read
        out.bytes += read
        if size > limits.max_file_bytes or out.bytes > limits.max_bytes:
            raise _Stop
        yield ctypes.string_at(buffer, read)


def _copy(
    handle: object, buffer: ctypes.Array, target: Path, out: Unpacked, limits: UnpackLimits
) -> None:
    with target.open("wb") as sink:
        for chunk in _chunks(handle, buffer, out, limits):
            sink.write(chunk)


def _read_all(handle: object, buffer: ctypes.Array, out: Unpacked, limits: UnpackLimits) -> bytes:
    return b"".join(_chunks(handle, buffer, out, limits))


def _label(prefix: str, entry: ArchiveEntry, handle: object) -> str:
    """The member's path inside the object, for reports only (never a file name)."""
    name = _pathname(entry)
    if not name and _format_name(handle) == "raw":
        name = "data"
    name = "".join(ch if ch.isprintable() else "?" for ch in name).lstrip("/") or "?"
    label = f"{prefix}/{name}" if prefix else name
    return label[-_LABEL_MAX:]


def _pathname(entry: ArchiveEntry) -> str:
    try:
        return entry.pathname or ""
    except (UnicodeDecodeError, TypeError):
        return ""


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(16)


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


_RAR5_SIGNATURE = b"Rar!\x1a\x07\x01\x00"


def _vint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while at < len(data):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at
    raise ValueError("truncated RAR5 number")


def _rar5_encrypted(path: Path, max_headers: int = 100_000) -> bool:
    """Does any RAR5 header say the archive or a file in it is encrypted?"""
    with path.open("rb") as handle:
        if handle.read(8) != _RAR5_SIGNATURE:
            return False
        try:
            for _ in range(max_headers):
                start = handle.tell()
                head = handle.read(4 + 3)
                if len(head) < 5:
                    return False
                size, at = _vint(head, 4)
                handle.seek(start + at)
                header = handle.read(size)
                if len(header) < size:
                    return False
                kind, at = _vint(header, 0)
                if kind == 4:  # archive encryption header: every header is encrypted
                    return True
                flags, at = _vint(header, at)
                extra = data = 0
                if flags & 1:
                    extra, at = _vint(header, at)
                if flags & 2:
                    data, at = _vint(header, at)
                if kind in (2, 3) and extra:  # file or service header: its extra records
                    at = size - extra
                    while at < size:
                        record, next_at = _vint(header, at)
                        record_type, _ = _vint(header, next_at)
                        if record_type == 1:  # encryption record
                            return True
                        at = next_at + record
                if kind == 5:  # end of archive
                    return False
                handle.seek(data, 1)
        except (ValueError, struct.error):
            return False
    return False
