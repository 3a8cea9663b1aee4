"""When a zip must also be read by its local headers, as a streaming extractor reads it.

ClamAV and libarchive's seekable reader go by the central directory; Java's
ZipInputStream, ``bsdtar`` from a pipe and libarchive's streaming reader walk
the local headers. Both views are read when they can differ: the local
headers name an entry the directory does not list (or a damaged directory
lists none), or a listed entry starts inside another's data, where a decoy
can take the name of an entry the directory leaves out.

Both walks are bounded by the entry budget: a directory of a million entries
is never held in memory.
"""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from libarchive.exception import ArchiveError

MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_EOCD = b"PK\x05\x06"
_CENTRAL = b"PK\x01\x02"
_EOCD_SEARCH = 65_535 + 22  # the record, and a comment of at most 64 KiB


def needs_local_read(
    path: Path, listed: list[str], local_names: Callable[[int], list[str]], cap: int
) -> bool:
    """Whether the local headers may hold what the directory's reading did not."""
    return bool(Counter(local_names(cap)) - Counter(listed)) or _entries_overlap(path, cap)


def central_directory(path: Path, cap: int) -> list[tuple[int, int, int, int]] | None:
    """(local header offset, compressed size, name length, extra length) of at most
    ``cap`` + 1 directory entries; None without an end record."""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - _EOCD_SEARCH))
        tail = handle.read()
        at = tail.rfind(_EOCD)
        if at < 0 or len(tail) - at < 22:
            return None
        (cd_size, cd_offset) = struct.unpack_from("<II", tail, at + 12)
        if cd_offset == 0xFFFFFFFF:  # zip64: the zip64 end record names it
            locator = tail.rfind(b"PK\x06\x06", 0, at)
            if locator < 0 or len(tail) - locator < 56:
                return None
            cd_size, cd_offset = struct.unpack_from("<QQ", tail, locator + 40)
        handle.seek(cd_offset)
        entries: list[tuple[int, int, int, int]] = []
        read = 0
        while read < cd_size and len(entries) <= cap:
            header = handle.read(46)
            if len(header) < 46 or header[:4] != _CENTRAL:
                break
            compressed, _ = struct.unpack_from("<II", header, 20)
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", header, 28)
            (offset,) = struct.unpack_from("<I", header, 42)
            name_extra = handle.read(name_len + extra_len + comment_len)
            if compressed == 0xFFFFFFFF or offset == 0xFFFFFFFF:
                compressed, offset = _zip64(
                    name_extra[name_len : name_len + extra_len], header, compressed, offset
                )
            entries.append((offset, compressed, name_len, extra_len))
            read += 46 + len(name_extra)
        return entries


def _zip64(extra: bytes, header: bytes, compressed: int, offset: int) -> tuple[int, int]:
    """The 64-bit sizes of a zip64 extra field (in its fixed order, each present
    only where the 32-bit field holds 0xFFFFFFFF)."""
    (uncompressed,) = struct.unpack_from("<I", header, 24)
    at = 0
    while at + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, at)
        body = extra[at + 4 : at + 4 + size]
        if tag == 1:
            fields = iter(struct.unpack_from(f"<{len(body) // 8}Q", body))
            with contextlib.suppress(StopIteration):
                if uncompressed == 0xFFFFFFFF:
                    next(fields)
                if compressed == 0xFFFFFFFF:
                    compressed = next(fields)
                if offset == 0xFFFFFFFF:
                    offset = next(fields)
        at += 4 + size
    return compressed, offset


def _entries_overlap(path: Path, cap: int) -> bool:
    """Does an entry the central directory lists start inside another's local
    header and data? (Never in a zip a tool wrote.)"""
    try:
        entries = central_directory(path, cap)
    except (OSError, struct.error, ArchiveError):
        return False
    if not entries:
        return False
    spans = []
    with path.open("rb") as raw:
        for offset, compressed, _, _ in entries:
            raw.seek(offset)
            local = raw.read(30)
            if len(local) < 30:
                return True
            name_len, extra_len = struct.unpack_from("<HH", local, 26)
            spans.append((offset, offset + 30 + name_len + extra_len + compressed))
    spans.sort()
    return any(start < end for (_, end), (start, _) in itertools.pairwise(spans))
