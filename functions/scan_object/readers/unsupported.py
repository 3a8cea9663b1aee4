"""Containers no reader here (nor ClamAV) opens, though 7-Zip does: never clean.

A squashfs, cramfs or WIM image, an ext2/3/4 or FAT file system image, a
zpaq, rzip or ARC archive, a file compressed by Unix pack or MS-DOS's
COMPRESS.EXE (SZDD, KWAJ): ClamAV takes each for a plain file and scans its bytes, and what is
stored compressed inside is never seen. Until a reader opens them, such a
file is ``unscannable`` (``unsupported-format``). Each is recognised by its
format's own mark, at the offset the format puts it.
"""

from __future__ import annotations

import struct

# How much of a file the marks below need (ext2's superblock magic is at 1080).
HEAD = 2048


def kind(head: bytes) -> str | None:
    if head.startswith((b"hsqs", b"sqsh")):
        return "squashfs"
    if head.startswith(b"MSWIM\0\0\0"):
        return "wim"
    if head.startswith((b"7kSt", b"zPQ")):
        return "zpaq"
    if head.startswith(b"RZIP"):
        return "rzip"
    if _arc(head):
        return "arc"
    if head[:2] == b"\x1f\x1e" and len(head) > 7 and 1 <= head[6] <= 24:
        return "pack"  # Unix pack (.z), which `gzip -d` still reads
    if _ext2(head):
        return "ext2"
    if (
        head[:4] in (b"\x45\x3d\xcd\x28", b"\x28\xcd\x3d\x45")
        or head[512:516] == b"\x45\x3d\xcd\x28"
    ):
        return "cramfs"
    if head.startswith(b"SZDD\x88\xf0\x27\x33") or head.startswith(b"KWAJ\x88\xf0\x27\xd1"):
        return "ms-compress"  # MS-DOS COMPRESS.EXE (a file name ending in _)
    if head[510:512] == b"\x55\xaa" and (
        head[54:59] in (b"FAT12", b"FAT16") or head[82:87] == b"FAT32"
    ):
        return "fat"
    return None


def _arc(head: bytes) -> bool:
    """SEA's ARC (1985, still written by Debian's ``arc``): 0x1A, a method from 1 to
    9, then a 13-byte name ended by NUL. Its one-byte mark is weak, so the name
    must be one a DOS file could have."""
    if len(head) < 29 or head[0] != 0x1A or not 1 <= head[1] <= 9:
        return False
    name, nul, _ = head[2:15].partition(b"\0")
    return bool(nul) and len(name) > 0 and all(0x21 <= c < 0x7F for c in name)


def _ext2(head: bytes) -> bool:
    """An ext2/3/4 superblock (at 1024): its magic, and fields only a superblock
    has in range (two bytes alone would take one file in 65,536 for an image)."""
    if len(head) < 1024 + 90 or head[1080:1082] != b"\x53\xef":
        return False
    inodes, blocks = struct.unpack_from("<II", head, 1024)
    (log_block,) = struct.unpack_from("<I", head, 1024 + 24)
    (per_group,) = struct.unpack_from("<I", head, 1024 + 32)
    (state,) = struct.unpack_from("<H", head, 1024 + 58)
    (revision,) = struct.unpack_from("<I", head, 1024 + 76)
    return (
        inodes > 0
        and blocks > 0
        and log_block <= 6
        and per_group == 8 << (10 + log_block)
        and state in (1, 2, 3)
        and revision in (0, 1)
    )
