"""Sample files and test signature sets, made on the spot.

No malware is shipped or downloaded: the EICAR test string is the industry's
harmless test file, and ClamAV's own test file comes from Debian's
``clamav-testfiles`` package.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import tempfile
import zipfile
import zlib
from pathlib import Path

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
EICAR_SIGNATURE = "Eicar-Test-Signature"
CLAMAV_TESTFILES = Path("/usr/share/clamav-testfiles")
CLAM_EXE = CLAMAV_TESTFILES / "clam.exe"
CLAM_EXE_SIGNATURE = "ClamAV-Test-File"
# 48 bytes of clam.exe's code section: a body signature matches it inside any
# container ClamAV unpacks (zip, tar.gz, cab, ...), unlike a whole-file hash.
_CLAM_EXE_BODY = (0x40, 0x70)


def write_eicar_set(directory: Path) -> Path:
    """Signature set A: only an MD5 hash signature for the EICAR string."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "eicar.hdb").write_text(f"{EICAR_MD5}:{len(EICAR)}:{EICAR_SIGNATURE}\n")
    return directory


def clam_exe_body_signature() -> str:
    start, end = _CLAM_EXE_BODY
    body = CLAM_EXE.read_bytes()[start:end].hex()
    return f"{CLAM_EXE_SIGNATURE}:0:*:{body}"


def write_test_set(directory: Path) -> Path:
    """Signature set B: EICAR plus a body signature for ClamAV's test file."""
    write_eicar_set(directory)
    if CLAM_EXE.exists():
        (directory / "clamav-test.ndb").write_text(clam_exe_body_signature() + "\n")
    return directory


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def encrypted_zip(name: str, data: bytes, password: str = "infected") -> bytes:  # noqa: S107
    """A ZipCrypto archive, made with Info-ZIP's ``zip`` (Python cannot write one)."""
    if not shutil.which("zip"):
        raise RuntimeError("the 'zip' command is needed for the encrypted sample (apt install zip)")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / name
        source.write_bytes(data)
        target = Path(tmp) / "out.zip"
        subprocess.run(
            ["zip", "-q", "-j", "-P", password, str(target), str(source)],
            check=True,
        )
        return target.read_bytes()


# -- containers ClamAV does not open (Debian's 1.4.6): our unpacking must ------------------


def libarchive_made(format_name: str, filter_name: str | None, name: str, data: bytes,
                    options: str = "") -> bytes:  # fmt: skip
    """One member in a container libarchive writes (7z with BZip2, tar.zst, bare .zst...)."""
    import libarchive

    out = bytearray()

    def write(chunk: bytes) -> int:
        out.extend(chunk)
        return len(chunk)

    with libarchive.custom_writer(write, format_name, filter_name, options=options) as archive:
        archive.add_file_from_memory(name, len(data), data)
    return bytes(out)


def seven_zip_made(name: str, data: bytes, *switches: str) -> bytes:
    """One member in an archive 7-Zip writes (``-tzip -mm=PPMd``); needs Debian's p7zip-full."""
    if not shutil.which("7z"):
        raise RuntimeError("the '7z' command is needed for this sample (apt install p7zip-full)")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / name
        source.write_bytes(data)
        target = Path(tmp) / "out.archive"
        subprocess.run(
            ["7z", "a", "-bd", "-y", *switches, str(target), str(source)],
            check=True,
            capture_output=True,
        )
        return target.read_bytes()


def zip_lzma(name: str, data: bytes) -> bytes:
    """LZMA as Python's zipfile writes it, which ClamAV does not read (7-Zip's it does)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_LZMA) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def rar4_stored(name: str, data: bytes) -> bytes:
    """A RAR 4 archive with one stored member (Debian's ClamAV has no unrar)."""

    def block(kind: int, flags: int, body: bytes) -> bytes:
        head = struct.pack("<BHH", kind, flags, 7 + len(body)) + body
        return struct.pack("<H", zlib.crc32(head) & 0xFFFF) + head

    encoded = name.encode()
    file_header = struct.pack(
        "<IIBIIBBHI",
        len(data),  # packed size
        len(data),  # unpacked size
        0,  # host OS: MS-DOS
        zlib.crc32(data),
        0x5A210000,  # DOS date and time
        20,  # version needed
        0x30,  # method: store
        len(encoded),
        0x20,  # attributes: archive
    )
    return (
        b"Rar!\x1a\x07\x00"
        + block(0x73, 0, b"\0" * 6)  # archive header
        + block(0x74, 0x8000, file_header + encoded)  # file header (+ data size)
        + data
        + block(0x7B, 0x4000, b"")  # end of archive
    )


def _zip_parts(data: bytes) -> tuple[bytes, list[bytes]]:
    """A zip as (its local part, its central directory records)."""
    end = data.rindex(b"PK\x05\x06")
    *_, cd_offset, _ = struct.unpack("<IHHHHIIH", data[end : end + 22])
    central, records = data[cd_offset:end], []
    while central:
        name_len, extra_len, comment_len = struct.unpack("<HHH", central[28:34])
        size = 46 + name_len + extra_len + comment_len
        records.append(central[:size])
        central = central[size:]
    return data[:cd_offset], records


def _zip_joined(local: bytes, records: list[bytes]) -> bytes:
    directory = b"".join(records)
    count = len(records)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(directory), len(local), 0)
    return local + directory + end


def _zip_of(*members: tuple[str, bytes, int]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, method in members:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buffer.getvalue()


def zip_with_unlisted_entry(shown: tuple[str, bytes], hidden: tuple[str, bytes]) -> bytes:
    """A zip whose central directory lists only ``shown``; ``hidden`` is there by its
    local header alone, which a streaming extractor (bsdtar from a pipe, Java's
    ZipInputStream) reads and ClamAV does not."""
    local, records = _zip_parts(
        _zip_of((*shown, zipfile.ZIP_DEFLATED), (*hidden, zipfile.ZIP_DEFLATED))
    )
    return _zip_joined(local, records[:1])


def zip_with_smuggled_entry(hidden: tuple[str, bytes], decoy: str = "other.txt") -> bytes:
    """A zip whose two views disagree at the same count: its central directory lists
    ``readme.txt`` and ``decoy`` (a local header inside readme.txt's stored data);
    its local headers are ``readme.txt`` and ``hidden``, which a streaming extractor
    reads and ClamAV does not. With ``decoy`` named as ``hidden``, even the names agree."""
    inner_local, [inner] = _zip_parts(_zip_of((decoy, b"nothing here\n", zipfile.ZIP_STORED)))
    local, [readme, _] = _zip_parts(
        _zip_of(("readme.txt", inner_local, zipfile.ZIP_STORED), (*hidden, zipfile.ZIP_DEFLATED))
    )
    # other.txt's record, pointing into readme.txt's data.
    offset = 30 + len("readme.txt") + struct.unpack("<H", local[28:30])[0]
    other = inner[:42] + struct.pack("<I", offset) + inner[46:]
    return _zip_joined(local, [readme, other])


def only_our_unpacking_catches() -> dict[str, bytes]:
    """EICAR in every container the issue found ClamAV answering OK for."""
    e = EICAR
    return {
        "zip-ppmd.zip": seven_zip_made("eicar.com", e, "-tzip", "-mm=PPMd"),
        "zip-python-lzma.zip": zip_lzma("eicar.com", e),
        "7z-bzip2.7z": libarchive_made("7zip", None, "eicar.com", e, "compression=bzip2"),
        "7z-deflate.7z": libarchive_made("7zip", None, "eicar.com", e, "compression=deflate"),
        "eicar.com.zst": libarchive_made("raw", "zstd", "eicar.com", e),
        "eicar.tar.zst": libarchive_made("ustar", "zstd", "eicar.com", e),
        "eicar.tar.lz4": libarchive_made("ustar", "lz4", "eicar.com", e),
        "eicar.tar.lz": libarchive_made("ustar", "lzip", "eicar.com", e),
        "eicar.rar": rar4_stored("eicar.com", e),
    }


def demo_samples() -> dict[str, tuple[bytes, str]]:
    """name -> (content, the verdict it was made for)."""
    return {
        "clean.txt": (b"Quarterly report: nothing to see here.\n", "clean"),
        "eicar.com": (EICAR, "infected"),
        "eicar.zip": (zipped("eicar.com", EICAR), "infected"),
        "nested.zip": (zipped("inner.zip", zipped("eicar.com", EICAR)), "infected"),
        "encrypted.zip": (encrypted_zip("secret.txt", b"top secret\n"), "unscannable"),
        # ClamAV answers OK for this one: only our own unpacking opens it.
        "ppmd.zip": (seven_zip_made("eicar.com", EICAR, "-tzip", "-mm=PPMd"), "infected"),
    }
