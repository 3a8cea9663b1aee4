"""Every byte accounted for: what an ordinary extractor gets out of a file is scanned.

A differential corpus built at test time with the tools' own packages. Each
case counts only if an independent extractor (unzip, 7-Zip, bsdtar, GNU ar,
gzip, zstd, lz4, lzip, Python's zipfile) gets the EICAR file out of it: that is
the oracle, not a model of what ClamAV reads. Each one then goes through the
pipeline with real clamd, and must come out ``infected``. The harmless
look-alikes (text that begins with an archive's first bytes) must come out
``clean``, not ``unscannable``.
"""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from differential import EICAR, check_case, run, tool

from scanctl import samples

# -- how each case is made ---------------------------------------------------------------


def streamed_zip(name: str, data: bytes) -> bytes:
    """A zip written to a pipe: data descriptors, sizes only after the data."""

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.out = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:
            self.out += b
            return len(b)

    pipe = Pipe()
    with (
        zipfile.ZipFile(pipe, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open(name, "w") as member,
    ):
        member.write(data)
    return bytes(pipe.out)


def png() -> bytes:
    """A tiny real PNG (1x1, grey)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


def benign_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("readme.txt")
        body = b"nothing to see here\n"
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def gzip_member_with_bad_header_crc(data: bytes) -> bytes:
    """A gzip member whose header CRC (FHCRC) is wrong: gzip -d and libarchive stop."""
    body = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = body.compress(data) + body.flush()
    header = b"\x1f\x8b\x08\x02" + bytes(4) + b"\x00\x03" + b"\xde\xad"  # FHCRC, wrong CRC16
    trailer = struct.pack("<II", zlib.crc32(data), len(data))
    return header + deflated + trailer


def ar_made(tmp: Path, name: str, data: bytes) -> bytes:
    """GNU ar as Debian's binutils writes it by default (deterministic: mode 644,
    no file-type bits)."""
    (tmp / name).write_bytes(data)
    run(tool("ar"), "rc", "out.a", name, cwd=tmp)
    return (tmp / "out.a").read_bytes()


def seven_zip_after_stub(tmp: Path) -> bytes:
    (tmp / "eicar.com").write_bytes(EICAR)
    run(tool("7z"), "a", "-t7z", "-mx=9", "x.7z", "eicar.com", cwd=tmp)
    stub = b"MZ" + bytes(510)  # an executable's first block, as a self-extractor has
    return stub + (tmp / "x.7z").read_bytes()


def compressed(command: str, data: bytes) -> bytes:
    return run(tool(command), "-c", data=data)


def zip_flags(data: bytes, bit: int) -> bytes:
    """The zip's one entry with ``bit`` set in the local and the central flags."""
    out = bytearray(data)
    for mark, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = out.find(mark) + at
        out[i : i + 2] = struct.pack("<H", struct.unpack_from("<H", out, i)[0] | bit)
    return bytes(out)


def end_record(data: bytes, offset: int, value: bytes) -> bytes:
    """The zip with its end-of-central-directory record changed at ``offset``."""
    out = bytearray(data)
    i = out.rfind(b"PK\x05\x06") + offset
    out[i : i + len(value)] = value
    return bytes(out)


def zip64_sized(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open(name, "w", force_zip64=True) as member,
    ):
        member.write(data)
    return buffer.getvalue()


def old_binary_cpio(name: str, data: bytes) -> bytes:
    """cpio's old binary format (as `cpio -H bin` writes it), mode 644 with no
    file-type bits."""

    def entry(path: bytes, mode: int, body: bytes) -> bytes:
        path += b"\0"
        fields = (0o70707, 0, 0, mode, 0, 0, 1, 0, 0, 0, len(path), 0, len(body))
        return (
            struct.pack("<13H", *fields) + path + bytes(len(path) % 2) + body + bytes(len(body) % 2)
        )

    return entry(name.encode(), 0o644, data) + entry(b"TRAILER!!!", 0, b"")


def warc(uri: bytes, block: bytes) -> bytes:
    head = b"WARC/1.0\r\nWARC-Type: resource\r\nWARC-Target-URI: %s\r\n" % uri
    head += b"WARC-Date: 2026-12-02T19:00:00Z\r\n"
    head += b"WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-000000000001>\r\n"
    head += b"Content-Length: %d\r\n\r\n" % len(block)
    return head + block + b"\r\n\r\n"


def warc_blocks(path: Path, tmp: Path) -> bytes:
    """Each record's block, exactly Content-Length bytes (ISO 28500), as a WARC
    reader (warcio, say) hands it out."""
    data, out, at = path.read_bytes(), b"", 0
    while (end := data.find(b"\r\n\r\n", at)) != -1:
        headers = dict(
            line.split(b": ", 1) for line in data[at:end].split(b"\r\n")[1:] if b": " in line
        )
        size = int(headers[b"Content-Length"])
        out += data[end + 4 : end + 4 + size] + b"\n--\n"
        at = end + 4 + size + 4
    return out


def uuencoded(begin: bytes, data: bytes, base64: bool = False) -> bytes:
    """A uuencode (or begin-base64) block with the given begin line."""
    import base64 as b64
    import binascii

    if base64:
        body = b64.encodebytes(data) + b"====\n"
    else:
        lines = (binascii.b2a_uu(data[i : i + 45]) for i in range(0, len(data), 45))
        body = b"".join(lines) + b"`\nend\n"
    return begin + b"\n" + body


def uudecoded(path: Path, tmp: Path) -> bytes:
    """sharutils' uudecode: it reads a begin line with any octal mode."""
    run(tool("uudecode"), "-o", str(tmp / "uudecoded"), str(path))
    return (tmp / "uudecoded").read_bytes()


def gzip_old_magic(data: bytes) -> bytes:
    member = bytearray(gzip.compress(data))
    member[1] = 0x9E  # gzip's magic before 0.5: `gzip -d` still reads it
    return bytes(member)


def pdf_marks(size: int) -> bytes:
    marks = b"A" * 2000 + b"%PDF-" * 10_001
    return marks + b"B" * (size - len(marks))


def newc_cpio(tmp: Path, name: str, data: bytes) -> bytes:
    (tmp / name).write_bytes(data)
    return run(tool("cpio"), "-o", "-H", "newc", data=f"{name}\n".encode(), cwd=tmp)


def cpio_stdout(path: Path, tmp: Path) -> bytes:
    return run(tool("cpio"), "-i", "--to-stdout", data=path.read_bytes())


def lzma_alone(data: bytes, dict_size: int) -> bytes:
    import lzma

    filters = [{"id": lzma.FILTER_LZMA1, "dict_size": dict_size}]
    return lzma.compress(data, format=lzma.FORMAT_ALONE, filters=filters)


# name -> (how it is made, what gets EICAR out of it (the oracle))
Make = Callable[[Path], bytes]
Oracle = Callable[[Path, Path], bytes]


def unzip_all(path: Path, tmp: Path) -> bytes:
    out = tmp / "unzipped"
    subprocess.run([tool("7z"), "x", "-y", f"-o{out}", str(path)], capture_output=True, check=False)
    return b"".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())


def decompress_all(command: str) -> Oracle:
    return lambda path, tmp: (
        subprocess.run(
            [tool(command), "-dc"], input=path.read_bytes(), capture_output=True, check=False
        ).stdout
    )


def unzip_print(path: Path, tmp: Path) -> bytes:
    """Info-ZIP's unzip: it finds the last end record, and a zip that does not
    start at the file's first byte."""
    return subprocess.run([tool("unzip"), "-p", str(path)], capture_output=True, check=False).stdout


def bsdtar_print(path: Path, tmp: Path) -> bytes:
    return run(tool("bsdtar"), "-xOf", str(path))


def write_to(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def ar_print(path: Path, tmp: Path) -> bytes:
    return run(tool("ar"), "p", str(path))


CASES: dict[str, tuple[Make, Oracle]] = {
    # A data-descriptor zip appended to an image: ClamAV sees an SFX it reads
    # no directory of; unzip and 7-Zip extract it.
    "zip-after-png.png": (lambda t: png() + streamed_zip("eicar.com", EICAR), unzip_all),
    # A zip after a tar's end, and after a gzip stream: readers stop at the end.
    "zip-after-tar.tar": (
        lambda t: benign_tar() + samples.zipped("eicar.com", EICAR),
        unzip_print,
    ),
    "zip-after-gzip.gz": (
        lambda t: gzip.compress(b"harmless\n") + samples.zipped("eicar.com", EICAR),
        unzip_print,
    ),
    # A zero block at the start of a zstd stream: libarchive's tar reader bids on
    # the decompressed data and reads an empty tar, so it was never written;
    # zstd -d gives it all (ClamAV's test file, found by its body signature).
    "zero-block-first.zst": (
        lambda t: compressed("zstd", bytes(512) + samples.CLAM_EXE.read_bytes()),
        decompress_all("zstd"),
    ),
    # An empty first lz4 frame: libarchive reads 0 bytes and stops; lz4 -d reads on.
    "empty-first-frame.lz4": (
        lambda t: compressed("lz4", b"") + compressed("lz4", EICAR),
        decompress_all("lz4"),
    ),
    # An empty first lzip member: the same, with lzip.
    "empty-first-member.lz": (
        lambda t: compressed("lzip", b"") + compressed("lzip", EICAR),
        decompress_all("lzip"),
    ),
    # A gzip member with a wrong header CRC before a second one: libarchive stops
    # at the first; Python's gzip reads both.
    "bad-crc-then.gz": (
        lambda t: gzip_member_with_bad_header_crc(b"harmless\n") + gzip.compress(EICAR),
        lambda path, tmp: gzip.decompress(path.read_bytes()),
    ),
    # GNU ar as binutils writes it: members whose mode has no file-type bits.
    "debian-style.a": (lambda t: ar_made(t, "eicar.com", EICAR), ar_print),
    # A 7z behind a 512-byte executable stub, outside the offsets libarchive
    # looks at for self-extractors.
    "stub-then.7z.exe": (seven_zip_after_stub, unzip_all),
    # Zips whose quirks ClamAV's zip parser reads short of what unzip extracts:
    # flag bit 13 ("masked" local header), zip64 sizes, an end record on "disk 1",
    # one that counts five entries, 20 KiB after the end record.
    "masked.zip": (lambda t: zip_flags(samples.zipped("eicar.com", EICAR), 1 << 13), unzip_print),
    "zip64-sizes.zip": (lambda t: zip64_sized("eicar.com", EICAR), unzip_print),
    "end-on-disk-1.zip": (
        lambda t: end_record(samples.zipped("eicar.com", EICAR), 4, b"\x01\x00"),
        unzip_print,
    ),
    "end-counts-five.zip": (
        lambda t: end_record(samples.zipped("eicar.com", EICAR), 8, b"\x05\x00\x05\x00"),
        unzip_print,
    ),
    "trailing-data.zip": (
        lambda t: samples.zipped("eicar.com", EICAR) + bytes(range(256)) * 80,
        unzip_print,
    ),
    # A data-descriptor zip appended to a PDF and to text.
    "zip-after.pdf": (
        lambda t: (
            b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n" + streamed_zip("eicar.com", EICAR)
        ),
        unzip_all,
    ),
    "zip-after-text.txt": (
        lambda t: b"a line of text\n" * 20 + streamed_zip("eicar.com", EICAR),
        unzip_all,
    ),
    # A zero block in front of the data in the other compressions too.
    "zero-block-first.lz4": (
        lambda t: compressed("lz4", bytes(512) + samples.CLAM_EXE.read_bytes()),
        decompress_all("lz4"),
    ),
    "zero-block-first.lz": (
        lambda t: compressed("lzip", bytes(512) + samples.CLAM_EXE.read_bytes()),
        decompress_all("lzip"),
    ),
    "zero-block-first.xz": (
        lambda t: compressed("xz", bytes(512) + samples.CLAM_EXE.read_bytes()),
        decompress_all("xz"),
    ),
    "zero-block-first.lzma": (
        lambda t: run(
            tool("xz"), "--format=lzma", "-c", data=bytes(512) + samples.CLAM_EXE.read_bytes()
        ),
        decompress_all("xz"),
    ),
    # Old binary cpio, its mode without file-type bits.
    "old-binary.cpio": (lambda t: old_binary_cpio("eicar.com", EICAR), bsdtar_print),
    # WARC: libarchive hands out the record with its 4-byte end (EICAR's hash no
    # longer matches); a WARC reader gives exactly Content-Length bytes.
    "crawl.warc": (lambda t: warc(b"http://example.com/eicar.com", EICAR), warc_blocks),
    "crawl.warc.gz": (
        lambda t: gzip.compress(warc(b"http://example.com/eicar.com", EICAR)),
        lambda path, tmp: warc_blocks(
            write_to(tmp / "x.warc", gzip.decompress(path.read_bytes())), tmp
        ),
    ),
    # From the independent attack: what gzip -d, lz4 -d, xz -d, uudecode and
    # 7-Zip read that nothing here recognised.
    "old-magic.gz": (lambda t: gzip_old_magic(EICAR), decompress_all("gzip")),
    "empty-then-compress.gz": (
        lambda t: gzip.compress(b"") + samples.libarchive_made("raw", "compress", "e", EICAR),
        decompress_all("gzip"),
    ),
    "empty-then-legacy.lz4": (
        lambda t: compressed("lz4", b"") + run(tool("lz4"), "-l", "-c", data=EICAR),
        decompress_all("lz4"),
    ),
    "dictionary-6k.lzma": (lambda t: lzma_alone(EICAR, 6 << 10), decompress_all("xz")),
    "eicar.lzma86": (lambda t: b"\x00" + lzma_alone(EICAR, 1 << 16), unzip_all),
    "begin-0644.uu": (lambda t: uuencoded(b"begin 0644 eicar.com", EICAR), uudecoded),
    "begin-tab.uu": (lambda t: uuencoded(b"begin 644\teicar.com", EICAR), uudecoded),
    "begin-base64.uu": (
        lambda t: uuencoded(b"begin-base64 0644 eicar.com", EICAR, base64=True),
        uudecoded,
    ),
    "notes-then-uu.txt": (
        lambda t: b"see the attachment below\n\n" + uuencoded(b"begin 0644 eicar.com", EICAR),
        uudecoded,
    ),
    # From the second attack: more PDF marks than MaxFiles, past the first KiB,
    # before a cpio GNU cpio finds after the junk (the search had stopped at the
    # cap, and the marks it skipped were never counted).
    "pdf-marks-then.cpio": (
        lambda t: pdf_marks(2 << 20) + newc_cpio(t, "eicar.com", EICAR),
        cpio_stdout,
    ),
    # Two whole zips back to back, the same entry name in both.
    "two-zips.zip": (
        lambda t: samples.zipped("notes.txt", b"harmless\n") + samples.zipped("notes.txt", EICAR),
        unzip_print,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_what_an_extractor_gets_out_is_scanned(harness, engine, tmp_path, name):
    make, oracle = CASES[name]
    check_case(harness, engine, tmp_path, name, make, oracle)


LOOKALIKES = {
    "zip-magic.txt": b"PK\x03\x04 is how a zip begins; this is a note about that.\n" * 20,
    "bzip2-magic.txt": b"BZh91AY&SY is how bzip2 begins; this note only says so.\n" * 20,
    "gzip-magic.bin": b"\x1f\x8b\x08" + bytes(range(256)) * 8,
    # Text and an image with an ext2 superblock's two-byte magic where it would be.
    "cjk.txt": "中文".encode() * 180 + b"S\xef\xbc\x8c" + "文本".encode() * 300,
    "chunk.png": png() + b"\x00" * (1080 - len(png())) + b"S\xef" + b"\x00" * 2000,
    # Matroska begins with ARC's mark (0x1A), not with an ARC header after it.
    "video.mkv": b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 8,
}


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_a_file_that_only_begins_like_an_archive_is_clean(harness, name):
    scan = harness.scan(f"plain/{name}", LOOKALIKES[name]).output["scan"]
    assert scan["verdict"] == "clean", scan


def test_a_zip_of_more_entries_than_max_files_is_limits_exceeded_at_once(harness):
    # ClamAV counts no empty entry toward MaxFiles and spends MaxScanTime (ten
    # minutes) on a million of them; the directory's own count says enough.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(10_001):
            archive.writestr(zipfile.ZipInfo(f"d{i}/"), b"")
    scan = harness.scan("many-entries.zip", buffer.getvalue()).output["scan"]
    assert (scan["verdict"], scan["reason"]) == ("unscannable", "limits-exceeded"), scan
    assert scan["signatures"] == ["Heuristics.Limits.Exceeded.MaxFiles"]


def test_an_lzma_stream_asking_for_a_huge_dictionary_is_limits_exceeded(harness, tmp_path):
    # GIVEN EICAR in a bare .lzma whose header asks for a 3 GiB dictionary (xz -d
    # decodes it; liblzma allocates what the header asks, and each byte decoded
    # touches it: nested, such streams took the second attack 2.3 GiB)
    stream = bytearray(lzma_alone(EICAR, 1 << 16))
    struct.pack_into("<I", stream, 1, 3 << 30)
    path = write_to(tmp_path / "huge-dictionary.lzma", bytes(stream))
    assert decompress_all("xz")(path, tmp_path) == EICAR

    scan = harness.scan("huge-dictionary.lzma", bytes(stream)).output["scan"]

    # THEN it is never clean: past the decoders' memory limit, limits-exceeded
    assert (scan["verdict"], scan["reason"]) == ("unscannable", "limits-exceeded"), scan


# -- containers nothing here opens: unsupported-format, never clean --------------------------


def fat_boot_sector() -> bytes:
    sector = bytearray(512)
    sector[0:3] = b"\xeb\x3c\x90"
    sector[3:11] = b"MSDOS5.0"
    sector[54:62] = b"FAT12   "
    sector[510:512] = b"\x55\xaa"
    return bytes(sector) + bytes(4096)


def file_system_image(tmp: Path, command: list[str]) -> bytes:
    """An image holding EICAR, made by the file system's own tool."""
    (tmp / "root").mkdir(exist_ok=True)
    (tmp / "root" / "eicar.com").write_bytes(EICAR)
    run(*command, cwd=tmp)
    return (tmp / "image").read_bytes()


UNSUPPORTED = {
    "image.squashfs": lambda t: b"hsqs" + bytes(92) + EICAR,
    "image.wim": lambda t: b"MSWIM\0\0\0" + bytes(200),
    "disk.img": lambda t: fat_boot_sector(),
    "root.ext2": lambda t: file_system_image(
        t, [tool("mke2fs"), "-q", "-t", "ext2", "-d", "root", "image", "256k"]
    ),
    "root.cramfs": lambda t: file_system_image(t, [tool("mkfs.cramfs"), "root", "image"]),
    # Unix pack (.z): magic, size, the tree's depth (`gzip -d` reads it).
    "eicar.z": lambda t: b"\x1f\x1e" + struct.pack(">I", 68) + b"\x06" + bytes(64),
    "empty-then-pack.gz": lambda t: (
        gzip.compress(b"") + b"\x1f\x1e" + struct.pack(">I", 68) + b"\x06" + bytes(64)
    ),
    # MS-DOS COMPRESS.EXE's output (SZDD; 7-Zip and msexpand open it).
    "eicar.co_": lambda t: (
        b"SZDD\x88\xf0\x27\x33A\x00" + struct.pack("<I", 68) + b"\xff" + EICAR[:8]
    ),
    "archive.zpaq": lambda t: b"7kSt" + bytes(64),
    "archive.rz": lambda t: b"RZIP" + bytes(64),
}


def test_an_arc_archive_is_unsupported_not_clean(harness, tmp_path):
    # Debian's arc (SEA ARC 5.21) crunches text: what is inside is not in its bytes.
    (tmp_path / "notes.txt").write_bytes(EICAR + b"\n" + b"a line of notes\n" * 200)
    run(tool("arc"), "a", "notes.arc", "notes.txt", cwd=tmp_path)
    assert EICAR not in (tmp_path / "notes.arc").read_bytes()
    scan = harness.scan("old/notes.arc", (tmp_path / "notes.arc").read_bytes()).output["scan"]
    assert (scan["verdict"], scan["reason"]) == ("unscannable", "unsupported-format"), scan


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_a_container_nothing_here_opens_is_unsupported_not_clean(harness, tmp_path, name):
    scan = harness.scan(f"images/{name}", UNSUPPORTED[name](tmp_path)).output["scan"]
    assert scan["verdict"] in ("unscannable", "infected"), scan
    if scan["verdict"] == "unscannable":
        assert scan["reason"] == "unsupported-format", scan


def test_a_raw_zlib_stream_is_inflated_and_scanned(harness, engine, tmp_path):
    check_case(
        harness,
        engine,
        tmp_path,
        "payload.zlib",
        lambda t: zlib.compress(EICAR, 9),
        lambda path, tmp: zlib.decompress(path.read_bytes()),  # zlib-flate -uncompress
    )
