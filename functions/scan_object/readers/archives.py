"""The libarchive reader: archives and compressed streams, through libarchive-c.

Only the formats and filters listed here are enabled: never ``mtree``, whose
entries name files on the local disk for libarchive to read, never a filter
that runs an outside program, and never ``all``; ``raw`` only so a bare
compressed stream is read (a "raw" read without a decompression filter is a
plain file, not an archive).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from libarchive import ffi
from libarchive.entry import ArchiveEntry
from libarchive.exception import ArchiveError

from functions.scan_object.readers.extraction import Extraction, Member, Problem, label

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
UNREADABLE_MAGIC = (b"\x89LZO\x00\r\n\x1a\n", b"LRZI", b"GRZipII\x00")
# A zip's local headers, walked in order: what a streaming extractor reads.
ZIP_STREAMING = ("zip_streamable",)
_BLOCK = 1 << 20

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


class Window:
    """The bytes of a file (or of bytes) from ``offset`` on, as a file of their own:
    a reader started there sees offset 0, and seeks inside the window only."""

    def __init__(self, source: Path | bytes, offset: int) -> None:
        self.source, self.offset = source, offset
        if isinstance(source, bytes):
            self._handle: BinaryIO = io.BytesIO(memoryview(source)[offset:])
            self.size = len(source) - offset
        else:
            self._handle = source.open("rb")
            self.size = self._handle.seek(0, 2) - offset
            self._handle.seek(offset)

    def head(self, size: int) -> bytes:
        if isinstance(self.source, bytes):
            return self.source[self.offset : self.offset + size]
        with self.source.open("rb") as handle:
            handle.seek(self.offset)
            return handle.read(size)

    def readinto(self, buffer: ctypes.Array) -> int:
        return self._handle.readinto(buffer)  # type: ignore[arg-type]

    def seek(self, position: int, whence: int) -> int:
        base = {0: self._start(), 1: self._handle.tell(), 2: self._start() + self.size}[whence]
        return self._handle.seek(max(self._start(), base + position)) - self._start()

    def _start(self) -> int:
        return 0 if isinstance(self.source, bytes) else self.offset

    def close(self) -> None:
        self._handle.close()


Source = Path | bytes | Window


@contextlib.contextmanager
def _reader(
    source: Source, formats: tuple[str, ...], raw: bool, filters: tuple[str, ...] = FILTERS
) -> Iterator[object]:
    handle = ffi.read_new()
    callbacks: list[object] = []  # kept alive while libarchive may call them
    try:
        for name in filters:
            ffi.get_read_filter_function(name)(handle)
        for name in formats:
            ffi.get_read_format_function(name)(handle)
        if raw:
            ffi.get_read_format_function("raw")(handle)
        if isinstance(source, bytes):
            ffi.read_open_memory(handle, ctypes.cast(source, ctypes.c_void_p), len(source))
        elif isinstance(source, Window):
            callbacks = _open_window(handle, source)
        else:
            ffi.read_open_filename_w(handle, str(source), 1 << 16)
        yield handle
    finally:
        ffi.read_free(handle)
        if isinstance(source, Window):
            source.close()
        del callbacks


def _open_window(handle: object, window: Window) -> list[object]:
    buffer = ctypes.create_string_buffer(1 << 16)
    pointer = ctypes.cast(buffer, ctypes.c_void_p)

    def read(_archive: object, _context: object, out: object) -> int:
        length = window.readinto(buffer)
        ctypes.cast(out, ctypes.POINTER(ctypes.c_void_p))[0] = pointer
        return length

    def seek(_archive: object, _context: object, offset: int, whence: int) -> int:
        return window.seek(offset, whence)

    read_cb = ffi.READ_CALLBACK(read)
    seek_cb = ffi.SEEK_CALLBACK(seek)
    ffi.read_set_seek_callback(handle, seek_cb)
    ffi.read_open(handle, None, ffi.NO_OPEN_CB, read_cb, ffi.NO_CLOSE_CB)
    return [buffer, read_cb, seek_cb]


# Text: what a member of printable ASCII may hold. Every format and filter
# enabled above marks itself with a byte outside it (7z, gzip, xz, zstd, lz4,
# lzma's dictionary size, cpio's binary header...) or with one of these
# printable marks; a tar header is recognised by its checksum (v7 has no mark).
_TEXT = bytes(range(0x20, 0x7F)) + b"\t\n\r\x0b\x0c"
_TEXT_MARKS = (
    b"PK", b"7z", b"Rar!", b"ustar", b"MSCF", b"!<arch>", b"xar!", b"-lh", b"-lz",
    b"WARC/", b"0707", b"BZh", b"LZIP", b"CD001", b"begin", b"MZ", b"%PDF-",
)  # fmt: skip
_TEXT_MARK = re.compile(b"|".join(re.escape(mark) for mark in _TEXT_MARKS))


def plain_text(data: bytes) -> bool:
    """True only for bytes no reader enabled here recognises: printable text with
    none of the printable marks, and no valid tar header in front. Saves opening
    libarchive for each of the many text members archives hold."""
    if data.translate(None, _TEXT) or _TEXT_MARK.search(data):
        return False
    return not _tar_checksum_ok(data[:512])


def _tar_checksum_ok(block: bytes) -> bool:
    if len(block) < 512:
        return False
    field = block[148:156].strip(b" \0")
    if not field or field.strip(b"01234567"):
        return False
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:512])
    return int(field, 8) == unsigned


def recognise(source: Source) -> str | None:
    """The archive format or compression libarchive sees (in a file, bytes, or a
    window of either); None if plain."""
    if isinstance(source, Path):
        # Asked several times of one file (the scanner, unpack, each reader):
        # remembered for the file as it is, its identity and change time.
        info = source.stat()
        return _recognised(source, (info.st_ino, info.st_size, info.st_mtime_ns))
    return _recognise(source)


@functools.lru_cache(maxsize=64)
def _recognised(path: Path, identity: tuple[int, int, int]) -> str | None:
    return _recognise(path)


def _recognise(source: Source) -> str | None:
    if isinstance(source, Window):
        head = source.head(16)
    else:
        head = source[:16] if isinstance(source, bytes) else read_head(source)
    if head.startswith(UNREADABLE_MAGIC):
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


def _strongly_recognised(source: Source) -> bool:
    formats = tuple(f for f in FORMATS if f not in _WEAK_FORMATS)
    filters = tuple(f for f in FILTERS if f not in _WEAK_FILTERS)
    try:
        with _reader(source, formats, raw=True, filters=filters) as handle:
            entry = ArchiveEntry(handle, "utf-8")
            ffi.read_next_header2(handle, entry._entry_p)
            return _filter_code(handle, 0) != _FILTER_NONE or _format_name(handle) != "raw"
    except ArchiveError as err:
        return "Unrecognized archive format" not in str(err.msg or "")


def compressed(path: Path) -> bool:
    """Is ``path`` a compressed stream (of anything: a 7z that must seek, say)?"""
    try:
        with _reader(path, (), raw=True) as handle:
            entry = ArchiveEntry(handle, "utf-8")
            ffi.read_next_header2(handle, entry._entry_p)
            return _filter_code(handle, 0) != _FILTER_NONE
    except ArchiveError:
        return False


def read_members(
    path: Source,
    prefix: str,
    depth: int,
    x: Extraction,
    formats: tuple[str, ...],
    nested: Callable[[Member, int], None],
    most: int | None = None,
    raw: bool = True,
    carved: bool = False,
) -> list[str]:
    """Write every entry of one archive that holds data, whatever its type says
    (links and devices are never created, only their data is read); returns the
    names of the entries read. ``nested`` opens what a member itself holds;
    ``most``: stop after that many entries; ``raw``: a bare compressed stream is
    read too; ``carved``: a candidate ``carve`` found: a read that fails is no
    problem (its raw bytes were scanned), though encryption still is, and bytes
    already written are not written again."""
    seen: list[str] = []
    buffer = ctypes.create_string_buffer(_BLOCK)
    problems = x.out.problems
    if carved:
        problems = _EncryptionOnly(x.out.problems)  # type: ignore[assignment]
    try:
        with _reader(path, formats, raw=raw) as handle:
            entry = ArchiveEntry(handle, "utf-8")
            raw = None
            while True:
                if ffi.read_next_header2(handle, entry._entry_p) == ffi.ARCHIVE_EOF:
                    return seen
                x.budget.entry()
                name = _pathname(entry)
                seen.append(name)
                if raw is None:
                    # Each compression layer is a level, as ClamAV counts them:
                    # libarchive peels a stack of twenty .zst in one go.
                    x.budget.depth(depth + len(_filters(handle)) - 1)
                    raw = _format_name(handle) == "raw"
                if _entry_is_metadata_encrypted(entry._entry_p):
                    x.problem(Problem.ENCRYPTED)
                    return seen
                if _entry_is_data_encrypted(entry._entry_p):
                    x.problem(Problem.ENCRYPTED)
                    continue  # never read: libarchive would hand back ciphertext (RAR4)
                member = label(prefix, name or ("data" if raw else ""))
                declared, data = entry.size, _Counted(_chunks(handle, buffer))
                try:
                    target = x.write(member, data, carved=carved)
                except ArchiveError as err:
                    # clamd scans every archive file we open (the object, or a member
                    # written for it), not one libarchive reached through a compression
                    # filter, nor what its directory hides.
                    peeled = [f for f in _filters(handle) if f != "none"]
                    scanned = formats != ZIP_STREAMING and not peeled
                    problems.extend(_problem(err, scanned))
                    if err.retcode != ffi.ARCHIVE_FAILED:
                        return seen  # FATAL: nothing more can be read
                    continue  # only this member is lost (what was read of it is scanned)
                if target is not None:
                    nested(target, depth + 1)
                if target is not None and declared is not None and 0 < declared < data.read:
                    # More data than the header declares (libarchive's WARC reader
                    # adds the record's 4-byte end): what a reader that stops at
                    # the declared size extracts is scanned too.
                    shorter = x.write(member, _prefix(target, declared), carved=True)
                    if shorter is not None:
                        nested(shorter, depth + 1)
                if most is not None and len(seen) >= most:
                    return seen
    except ArchiveError as err:
        if "Unrecognized archive format" in str(err.msg or ""):
            return seen  # not an archive after all
        problems.extend(_problem(err, scanned=False))
    return seen


class _EncryptionOnly(list):
    """Where a quiet read records its problems: only encryption reaches the object's."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__()
        self.problems = problems

    def extend(self, found: object) -> None:  # type: ignore[override]
        self.problems.extend(p for p in found if p == Problem.ENCRYPTED)  # type: ignore[attr-defined]


def _format_name(handle: object) -> str:
    # Some readers (WARC) name no format: NULL, "".
    return (ffi.format_name(handle) or b"").decode(errors="replace")


def _filters(handle: object) -> list[str]:
    return [
        (ffi.filter_name(handle, i) or b"").decode(errors="replace")
        for i in range(ffi.filter_count(handle))
    ]


def _problem(err: ArchiveError, scanned: bool) -> list[str]:
    """What a libarchive error means for the verdict; ``scanned``: the member it
    happened on is in a zip clamd was given as a file."""
    message = str(err.msg or "").lower()
    if "encrypt" in message or "passphrase" in message:
        return [Problem.ENCRYPTED]
    if "deflation-64-bit" in message and scanned:
        # Zip's Deflate64, which libarchive cannot read: the one member left to
        # ClamAV's own zip reader (which inflates Deflate64), in the zip file clamd
        # scans itself (tests/integration/test_deep_unpack.py shows it finding EICAR).
        return []
    return [Problem.UNREADABLE]


def _chunks(handle: object, buffer: ctypes.Array) -> Iterator[bytes]:
    """The current member's data, block by block."""
    while True:
        read = _read_data(handle, buffer, _BLOCK)
        if read == 0:
            return
        if read < 0:
            raise ffi.archive_error(handle, read)
        yield ctypes.string_at(buffer, read)


class _Counted:
    """Chunks, counting the bytes they held."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.read = chunks, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.read += len(chunk)
            yield chunk


def _prefix(member: Member, size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of a member as written."""
    if member.data is not None:
        yield member.data[:size]
        return
    assert member.path is not None
    with member.path.open("rb") as handle:
        while size > 0 and (block := handle.read(min(size, _BLOCK))):
            size -= len(block)
            yield block


def _pathname(entry: ArchiveEntry) -> str:
    try:
        return entry.pathname or ""
    except (UnicodeDecodeError, TypeError):
        return ""


def read_head(path: Path, size: int = 16) -> bytes:
    with path.open("rb") as handle:
        return handle.read(size)
