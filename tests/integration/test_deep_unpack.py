"""Our own unpacking: nothing ClamAV cannot open passes as clean.

Real clamd with the EICAR hash signature; the containers are the ones Debian's
ClamAV 1.4.6 answers OK for with EICAR inside (issue #10's measurements).
"""

from __future__ import annotations

import bz2
import io
import json
import tarfile
from pathlib import Path

import pytest

from functions.scan_object.readers import UnpackLimits, recognise, unpack
from scanctl import samples

HIDDEN = samples.only_our_unpacking_catches()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", sorted(HIDDEN))
def test_clamav_alone_misses_it_and_the_pipeline_catches_it(harness, engine, tmp_path, name):
    # GIVEN EICAR in a container ClamAV does not open: ClamAV alone says OK
    assert not engine.scan_file(write(tmp_path, name, HIDDEN[name])).found

    # WHEN it is uploaded
    report = harness.scan(f"hidden/{name}", HIDDEN[name])

    # THEN our unpacking found it, named the member, and it was quarantined
    scan = report.output["scan"]
    assert scan["verdict"] == "infected"
    assert scan["foundBy"] == "unpack"
    assert samples.EICAR_SIGNATURE in scan["signatures"][0]
    assert "eicar.com: " in scan["signatures"][0] or "data: " in scan["signatures"][0]
    assert report.output["action"]["action"] == "quarantined"


def test_nested_inside_a_zip_clamav_opens_the_member_path_is_named(harness):
    # A 7z with BZip2 and a RAR inside an ordinary deflate zip.
    outer = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("docs/readme.txt", b"nothing here")
        archive.writestr("inner.7z", HIDDEN["7z-bzip2.7z"])
        archive.writestr("old/inner.rar", HIDDEN["eicar.rar"])

    report = harness.scan("nested.zip", outer.getvalue())

    scan = report.output["scan"]
    assert scan["verdict"] == "infected"
    assert scan["foundBy"] == "unpack"
    labels = sorted(s.split(": ")[0] for s in scan["signatures"])
    assert labels == ["inner.7z/eicar.com", "old/inner.rar/eicar.com"]
    assert scan["unpacked"]["archives"] == 3


def test_scanctl_local_catches_them_too(tmp_path, signatures):
    from click.testing import CliRunner

    from scanctl.cli import main

    for name, data in HIDDEN.items():
        (tmp_path / name).write_bytes(data)

    result = CliRunner().invoke(
        main, ["local", str(tmp_path), "--json", "--definitions", str(signatures)]
    )

    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {r["key"]: r["verdict"] for r in rows} == dict.fromkeys(HIDDEN, "infected")
    assert result.exit_code == 1


# -- bombs, traversal, mtree, encryption, damage ---------------------------------------------


@pytest.fixture(scope="module")
def gigabyte_of_zeros() -> bytes:
    """1 GiB of zeros in a few KB of zstd, written as a stream (memory stays flat)."""
    zeros = bytes(1024 * 1024)
    import libarchive

    out = bytearray()

    def sink(chunk: bytes) -> int:
        out.extend(chunk)
        return len(chunk)

    with libarchive.custom_writer(sink, "ustar", "zstd") as archive:
        archive.add_file_from_memory("zeros.bin", 1024**3, (zeros for _ in range(1024)))
    assert len(out) < 100_000
    return bytes(out)


def test_a_gigabyte_bomb_is_limits_exceeded_not_clean(make_harness, gigabyte_of_zeros):
    harness = make_harness(max_object_size_mb=1)  # MaxFileSize 1 MB, MaxScanSize 4 MB

    report = harness.scan("bomb.tar.zst", gigabyte_of_zeros)

    scan = report.output["scan"]
    assert (scan["verdict"], scan["reason"]) == ("unscannable", "limits-exceeded")
    assert scan["unpacked"]["bytes"] <= 1024 * 1024 + (1 << 20)  # stopped at the limit


def test_twenty_levels_of_nesting_are_limits_exceeded(harness):
    layer = samples.EICAR
    for _ in range(20):
        layer = samples.libarchive_made("raw", "zstd", "layer", layer)

    report = harness.scan("deep.zst", layer)

    scan = report.output["scan"]
    assert (scan["verdict"], scan["reason"]) == ("unscannable", "limits-exceeded")


def test_traversal_and_link_members_stay_inside_and_the_scan_completes(harness, tmp_path):
    # GIVEN a tar.zst whose members try to escape and link out
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in [
            ("../../escaped-by-scanner.txt", b"outside"),
            ("/tmp/absolute-by-scanner.txt", b"absolute"),
            ("ok/eicar.com", samples.EICAR),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("passwd-link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        hard = tarfile.TarInfo("hard-link")
        hard.type, hard.linkname = tarfile.LNKTYPE, "/etc/shadow"
        tar.addfile(hard)
    archive = samples.libarchive_made("raw", "zstd", "evil.tar", raw.getvalue())

    report = harness.scan("evil.tar.zst", archive)

    # THEN the scan completed (EICAR found, named), and nothing was written outside
    scan = report.output["scan"]
    assert scan["verdict"] == "infected"
    assert any("ok/eicar.com: " in s for s in scan["signatures"])
    assert not Path("/tmp/absolute-by-scanner.txt").exists()
    work = Path(harness.options.work_dir)
    assert not list(work.parent.rglob("escaped-by-scanner.txt"))
    assert not [p for p in (work / "objects").glob("*")]  # removed after the scan


def test_an_uploaded_mtree_is_not_followed(harness, tmp_path):
    # mtree entries name local files for libarchive to read. If it were enabled,
    # this one would make the scanner read a local EICAR file and call it infected.
    local = write(tmp_path, "local-eicar.com", samples.EICAR)
    mtree = f"#mtree\n./x type=file contents={local} size={len(samples.EICAR)}\n".encode()

    assert recognise(write(tmp_path, "list.mtree", mtree)) is None
    report = harness.scan("list.mtree", mtree)

    assert report.output["scan"]["verdict"] == "clean"
    assert report.output["scan"]["unpacked"] is None


def test_a_password_protected_member_is_encrypted(harness):
    wrapped = samples.libarchive_made(
        "raw", "zstd", "secret.zip", samples.encrypted_zip("secret.txt", b"x")
    )
    report = harness.scan("secret.zip.zst", wrapped)
    scan = report.output["scan"]
    assert (scan["verdict"], scan["reason"]) == ("unscannable", "encrypted")


def test_a_truncated_archive_is_unscannable_not_clean(harness):
    # A tar.gz cut in the middle of a member: gzip -d gives what comes before
    # the cut, and that much is read and scanned; the rest is lost.
    import random

    member = random.Random(5).randbytes(256 * 1024)
    whole = samples.libarchive_made("ustar", "gzip", "big.bin", member)
    report = harness.scan("broken.tar.gz", whole[: len(whole) // 2])
    scan = report.output["scan"]
    assert scan["verdict"] == "unscannable"
    assert scan["reason"] == "archive-unreadable"


def test_a_stream_cut_before_anything_decodes_is_no_problem(harness):
    # A zstd frame missing its end: no decoder gives a byte of it (zstd -d gives
    # nothing), and clamd scanned its raw bytes: like text that begins with an
    # archive's marks, it is clean, not unscannable.
    broken = HIDDEN["eicar.tar.zst"][:-20]
    scan = harness.scan("broken.tar.zst", broken).output["scan"]
    assert scan["verdict"] == "clean", scan


def test_a_plain_file_gets_no_second_pass(harness):
    report = harness.scan("notes.txt", b"plain words\n" * 100)
    assert report.output["scan"]["verdict"] == "clean"
    assert report.output["scan"]["unpacked"] is None


# -- every member scanned: nothing left to a guess about what ClamAV read ------------------


def _tar(filter_name: str | None) -> bytes:
    return samples.libarchive_made("ustar", filter_name, "eicar.com", samples.EICAR)


COVERED = {
    "stored.zip": lambda: samples.seven_zip_made("eicar.com", samples.EICAR, "-tzip", "-mm=Copy"),
    "deflate.zip": lambda: samples.zipped("eicar.com", samples.EICAR),
    "eicar.com.gz": lambda: samples.libarchive_made("raw", "gzip", "eicar.com", samples.EICAR),
    "eicar.com.xz": lambda: samples.libarchive_made("raw", "xz", "eicar.com", samples.EICAR),
}


@pytest.mark.parametrize("name", sorted(COVERED))
def test_every_member_is_scanned_again_even_where_clamav_reads_it(engine, tmp_path, name):
    # ClamAV reads these (stored and deflated zips, bare gzip and xz); the
    # second pass no longer takes that for granted: ClamAV's parsers read some
    # of them short where other extractors read on (issue 19).
    path = write(tmp_path, name, COVERED[name]())
    assert engine.scan_file(path).found
    unpacked = unpack(path, tmp_path / "out", UnpackLimits(1 << 30, 1 << 30, 100, 16))
    assert unpacked.summary()["rescanned"] == 1
    [(batch, raw)] = engine.scan_tree(tmp_path / "out").items()
    assert raw.signature.startswith(samples.EICAR_SIGNATURE)
    assert unpacked.batches[batch] == ["data" if name.endswith(("gz", "xz")) else "eicar.com"]


def test_clamav_reads_deflate64_zip_members(engine, tmp_path):
    # Deflate64 compresses only data worth it; the body signature for ClamAV's
    # own test file matches inside whatever surrounds it.
    data = samples.CLAM_EXE.read_bytes() * 20
    path = write(
        tmp_path, "d64.zip", samples.seven_zip_made("clam.exe", data, "-tzip", "-mm=Deflate64")
    )
    assert recognise(path) == "ZIP 2.1 (deflation-64-bit)"
    assert engine.scan_file(path).found
    # libarchive cannot read Deflate64; ClamAV did, in the zip it was given: the
    # one member the second pass leaves to ClamAV's reading.
    unpacked = unpack(path, tmp_path / "out", UnpackLimits(1 << 30, 1 << 30, 100, 16))
    assert (unpacked.labels, unpacked.problems) == ({}, [])


# -- what ClamAV reads short, or not at all: scanned again, never clean ----------------------


def _tar_clamav_stops_reading() -> bytes:
    """A tar with a header whose name is empty before EICAR (gzipped): ClamAV stops
    there; tar, bsdtar and Python's tarfile read on and extract it."""
    hidden = samples.libarchive_made("raw", "gzip", "eicar.com", samples.EICAR)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, kind, data in (
            ("readme.txt", tarfile.REGTYPE, b"benign\n"),
            ("blank", tarfile.DIRTYPE, b""),
            ("eicar.com.gz", tarfile.REGTYPE, hidden),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, len(data)
            archive.addfile(info, io.BytesIO(data))
    data = bytearray(buffer.getvalue())
    header = data[1024:1536]  # the directory's header: its name blanked, checksum redone
    header[0:100] = bytes(100)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    data[1024:1536] = header
    return bytes(data)


def _deflate64_zip_in(filter_name: str) -> bytes:
    # A Deflate64 zip (which libarchive cannot read) inside a compression ClamAV
    # does not open: clamd must get the zip itself to read it.
    data = samples.CLAM_EXE.read_bytes() + bytes(range(256)) * 400
    inner = samples.seven_zip_made("clam.exe", data, "-tzip", "-mm=Deflate64")
    return samples.libarchive_made("raw", filter_name, "clam.zip", inner)


EVASIONS = {
    # uuencoded zstd: ClamAV decodes uuencode itself, not zstd
    "eicar.zst.uu": (
        lambda: samples.libarchive_made(
            "raw",
            "uuencode",
            "e.zst",
            samples.libarchive_made("raw", "zstd", "e.com", samples.EICAR),
        ),
        "infected",
    ),
    "deflate64.zip.zst": (lambda: _deflate64_zip_in("zstd"), "infected"),
    "deflate64.zip.lz": (lambda: _deflate64_zip_in("lzip"), "infected"),
    # An empty first stream: what comes out is EICAR alone, whose hash the test set holds.
    "two-streams.bz2": (
        lambda: bz2.compress(b"") + bz2.compress(samples.EICAR),
        "infected",
    ),
    "blank-header.tar": (_tar_clamav_stops_reading, "infected"),
    "eicar.Z": (
        lambda: samples.libarchive_made("raw", "compress", "e.com", samples.EICAR),
        "infected",
    ),
    "package.deb": (
        lambda: samples.libarchive_made("ar_svr4", None, "data.tar.xz", _tar("xz")),
        "infected",
    ),
    "shadowed.zip": (
        lambda: samples.zip_with_smuggled_entry(("e.com", samples.EICAR), decoy="e.com"),
        "infected",
    ),
    "smuggled.zip": (lambda: samples.zip_with_smuggled_entry(("e.com", samples.EICAR)), "infected"),
    "unlisted.zip": (
        lambda: samples.zip_with_unlisted_entry(
            ("readme.txt", b"benign\n"), ("e.com", samples.EICAR)
        ),
        "infected",
    ),
    "eicar.lzo": (lambda: b"\x89LZO\x00\r\n\x1a\n" + bytes(64) + samples.EICAR, "unscannable"),
}


@pytest.mark.parametrize("name", sorted(EVASIONS))
def test_what_clamav_reads_short_or_not_at_all_never_comes_out_clean(
    harness, engine, tmp_path, name
):
    make, expected = EVASIONS[name]
    data = make()
    # GIVEN content ClamAV alone answers OK for (it stops short, or cannot open it)
    assert not engine.scan_file(write(tmp_path, name, data)).found

    # WHEN it is uploaded
    scan = harness.scan(f"evasion/{name}", data).output["scan"]

    # THEN our unpacking found what is inside, or says it could not read it
    assert scan["verdict"] == expected, scan
    if expected == "infected":
        assert scan["foundBy"] == "unpack"
        signature = scan["signatures"][0]
        assert samples.EICAR_SIGNATURE in signature or "ClamAV-Test-File" in signature
    else:
        assert scan["reason"] == "archive-unreadable"


LOOKALIKES = {
    # two bytes make compress bid; a "begin" line, uuencode; "WARC/", WARC
    "random.bin": b"\x1f\x9d\x90" + bytes(range(256)) * 16,
    "notes.txt": b"Notes\nbegin 644 notes.txt\nM5&AI<R!I<R!A(&QI;F4@;V8@=&5X=\n" + b"more\n" * 50,
    "about-warc.txt": b"WARC/1.0\r\nthis is just text about warc files\r\n" * 20,
}


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_a_plain_file_with_an_archive_s_first_bytes_is_clean_not_unscannable(harness, name):
    scan = harness.scan(f"plain/{name}", LOOKALIKES[name]).output["scan"]
    # (the second pass may read what its marks promise: nothing decodes, no problem)
    assert (scan["verdict"], scan["reason"]) == ("clean", None), scan
