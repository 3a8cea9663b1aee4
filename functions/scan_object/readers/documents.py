"""Documents and archives whose content is encrypted: ``encrypted``, never ``clean``.

ClamAV alerts on the encryption it recognises (``AlertEncrypted*``); these it
let through as clean:

- an encrypted Office Open XML file (a password-protected .docx, .xlsx...):
  an OLE2 compound file holding the streams ``EncryptionInfo`` and
  ``EncryptedPackage`` (MS-OFFCRYPTO), read with olefile;
- an encrypted OpenDocument file: a zip whose ``META-INF/manifest.xml``
  names ``encryption-data`` for its entries (checked as members are read);
- a garbled (password-encrypted) ARJ archive: bit 0 of a header's flags.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ARJ_MAGIC = b"\x60\xea"
_ENCRYPTED_OOXML = {"encryptioninfo", "encryptedpackage"}
_ARJ_GARBLED = 0x01
_ARJ_MAX_HEADERS = 100_000


def of_interest(head: bytes) -> bool:
    """Whether a file with these first bytes is one ``encrypted`` must look at."""
    return head.startswith((OLE2_MAGIC, ARJ_MAGIC))


def encrypted(source: Path | bytes) -> bool:
    head = source[:8] if isinstance(source, bytes) else _head(source)
    if head.startswith(OLE2_MAGIC):
        return _encrypted_ooxml(source)
    if head.startswith(ARJ_MAGIC):
        return _garbled_arj(source)
    return False


def encrypted_manifest(label: str, data: bytes | None, path: Path | None = None) -> bool:
    """An OpenDocument manifest that says its entries are encrypted (held in
    memory, or a file: a comment can make a manifest as large as it likes)."""
    if not label.endswith("META-INF/manifest.xml"):
        return False
    if data is not None:
        return b"encryption-data" in data
    if path is None or not path.stat().st_size:
        return False
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return view.find(b"encryption-data") != -1


def _encrypted_ooxml(source: Path | bytes) -> bool:
    import olefile

    try:
        with olefile.OleFileIO(source if isinstance(source, bytes) else str(source)) as ole:
            names = {entry[-1].lower() for entry in ole.listdir(streams=True, storages=False)}
    except (OSError, ValueError, IndexError, struct.error, RecursionError):
        return False  # not a compound file olefile reads: ClamAV's OLE2 pass had it
    return names >= _ENCRYPTED_OOXML


def _garbled_arj(source: Path | bytes) -> bool:
    data = source if isinstance(source, bytes) else source.read_bytes()
    at = 0
    for index in range(_ARJ_MAX_HEADERS):
        if data[at : at + 2] != ARJ_MAGIC or len(data) < at + 4:
            return False
        (size,) = struct.unpack_from("<H", data, at + 2)
        if size == 0:  # the end of the archive
            return False
        header = data[at + 4 : at + 4 + size]
        if len(header) < 16:
            return False
        if header[4] & _ARJ_GARBLED:
            return True
        at += 4 + size + 4  # the header, its CRC
        while len(data) >= at + 2:  # extended headers: a size, then that many bytes and a CRC
            (extended,) = struct.unpack_from("<H", data, at)
            at += 2
            if extended == 0:
                break
            at += extended + 4
        if index:  # a member's header (the first is the archive's): skip its data
            (compressed,) = struct.unpack_from("<I", header, 12)
            at += compressed
    return False


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(8)
