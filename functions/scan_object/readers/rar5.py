"""RAR5's encryption, which libarchive 3.6 neither decrypts nor reports: it hands
back ciphertext as if it were content. Its headers say so; they are read here."""

from __future__ import annotations

import struct
from pathlib import Path

SIGNATURE = b"Rar!\x1a\x07\x01\x00"


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


def encrypted(path: Path, max_headers: int = 100_000) -> bool:
    """Does any RAR5 header say the archive or a file in it is encrypted?"""
    with path.open("rb") as handle:
        if handle.read(8) != SIGNATURE:
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
