"""A zip's central directory, read with a bound: which local headers it lists.

ClamAV and libarchive's seekable reader go by the central directory; Java's
ZipInputStream, ``bsdtar`` from a pipe and libarchive's streaming reader walk
the local headers. The entries the directory lists are read from the start;
every other local header (an entry the directory leaves out, one hidden
behind a decoy, a whole zip appended) is read on its own by ``carve``. The
walk stops at the entry budget: a directory of a million entries is never held
in memory.
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_EOCD = b"PK\x05\x06"
_CENTRAL = b"PK\x01\x02"
_EOCD_SEARCH = 65_535 + 22  # the record, and a comment of at most 64 KiB


def more_entries_than(path: Path, cap: int) -> bool:
    """Does the zip's central directory list more than ``cap`` entries? (Counted by
    walking at most ``cap`` + 1 of them, not by the end record's count.)"""
    try:
        entries = central_directory(path, cap)
    except (OSError, struct.error):
        return False
    return entries is not None and len(entries) > cap


def listed_offsets(path: Path, cap: int) -> set[int]:
    """Where, in the file, the local headers the central directory lists begin (an
    SFX or an appended zip's offsets count from its own start: they are moved)."""
    try:
        entries = central_directory(path, cap, absolute=True)
    except (OSError, struct.error):
        return set()
    return {offset for offset, _, _, _ in entries or []}


def central_directory(
    path: Path, cap: int, absolute: bool = False
) -> list[tuple[int, int, int, int]] | None:
    """(local header offset, compressed size, name length, extra length) of at most
    ``cap`` + 1 directory entries; None without an end record. ``absolute``: offsets
    in the file, for a zip that does not start at its first byte."""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - _EOCD_SEARCH))
        tail = handle.read()
        at = tail.rfind(_EOCD)
        if at < 0 or len(tail) - at < 22:
            return None
        (cd_size, cd_offset) = struct.unpack_from("<II", tail, at + 12)
        # The directory ends where the end records begin: the zip64 end record
        # when there is one (its locator is the 20 bytes before the end record),
        # whose sizes count whether or not the 32-bit ones overflowed.
        cd_end = size - len(tail) + at
        record = tail.rfind(b"PK\x06\x06", 0, at)
        if at >= 20 and tail[at - 20 : at - 16] == b"PK\x06\x07" and record >= 0:
            if len(tail) - record < 56:
                return None
            cd_size, cd_offset = struct.unpack_from("<QQ", tail, record + 40)
            cd_end = size - len(tail) + record
        elif cd_offset == 0xFFFFFFFF:
            return None
        # Where the directory really is, against where it says it is: what was put
        # in front of the zip (an executable, an image).
        base = max(0, cd_end - cd_size - cd_offset)
        handle.seek(base + cd_offset)
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
            entries.append(((base if absolute else 0) + offset, compressed, name_len, extra_len))
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
