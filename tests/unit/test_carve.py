"""The search for archive marks reads a file a chunk at a time: a mark is found
wherever it is, across a chunk's end too, as in the same bytes held in memory."""

from __future__ import annotations

import pytest

from functions.scan_object.readers import carve

# A start of each kind of object the search looks for anywhere, as its mark's
# check accepts it, and how far into the sample the object starts.
SAMPLES = {
    b"PK\x03\x04": (b"PK\x03\x04\x14\x00", 0),
    b"ustar": (b"ustar\x0000", -257),
    b"\x1f\x8b\x08": (b"\x1f\x8b\x08\x00", 0),
    b"BZh": (b"BZh91AY&SY", 0),
    b"\xfd7zXZ\x00": (b"\xfd7zXZ\x00", 0),
    b"\x28\xb5\x2f\xfd": (b"\x28\xb5\x2f\xfd", 0),
    b"\x04\x22\x4d\x18": (b"\x04\x22\x4d\x18", 0),
    b"\x02\x21\x4c\x18": (b"\x02\x21\x4c\x18", 0),
    b"LZIP": (b"LZIP\x01", 0),
    b"7z\xbc\xaf\x27\x1c": (b"7z\xbc\xaf\x27\x1c", 0),
    b"Rar!\x1a\x07": (b"Rar!\x1a\x07\x00", 0),
    b"MSCF": (b"MSCF\x00\x00\x00\x00", 0),
    b"!<arch>\n": (b"!<arch>\n", 0),
    b"07070": (b"070701", 0),
    b"xar!": (b"xar!", 0),
    b"CD001": (b"CD001", -32769),
    b"-lh": (b"-lh5-", -2),
    b"begin": (b"\nbegin 644 eicar.com\n", 1),  # at a line's start only
    b"%PDF-": (b"%PDF-", 0),
}
FILLER = b"."


def test_every_mark_searched_for_has_a_sample():
    assert {mark.magic for mark in carve.MARKS if mark.anywhere} == set(SAMPLES)


def planted(sample: bytes, at: int, size: int) -> bytes:
    return FILLER * at + sample + FILLER * (size - at - len(sample))


@pytest.mark.parametrize("magic", list(SAMPLES), ids=lambda m: m.decode("latin-1"))
def test_a_mark_is_found_across_every_chunk_boundary(magic, tmp_path, monkeypatch):
    monkeypatch.setattr(carve, "_CHUNK", 4096)
    sample, start = SAMPLES[magic]
    chunk = carve._CHUNK
    # Far enough in that the object's own start (an ISO 9660 image begins 32 KiB
    # before its mark) is in the file.
    base = 9 * chunk
    for at in sorted(
        {base + d for d in range(-len(sample) - carve._TAIL - 2, 3)} | {base + chunk // 2}
    ):
        data = planted(sample, at, 12 * chunk)
        path = tmp_path / "planted"
        path.write_bytes(data)
        found = [(offset, mark.magic) for offset, mark in carve.file_candidates(path, 100)]
        assert found == [(at + start, magic)], at - base
        in_memory = [(offset, mark.magic) for offset, mark in carve.candidates(data, 100)]
        assert found == in_memory


def test_a_begin_line_is_read_only_at_a_line_start_across_a_boundary(tmp_path, monkeypatch):
    monkeypatch.setattr(carve, "_CHUNK", 4096)
    at = 3 * carve._CHUNK
    for before, expected in ((b"\n", [at]), (b"x", [])):
        data = FILLER * (at - 1) + before + b"begin 644 eicar.com\n" + FILLER * 5000
        path = tmp_path / "begin"
        path.write_bytes(data)
        assert [offset for offset, _ in carve.file_candidates(path, 100)] == expected


def test_the_real_chunk_size_reads_a_mark_across_its_end(tmp_path):
    at = carve._CHUNK - 2
    path = tmp_path / "big"
    path.write_bytes(planted(b"PK\x03\x04", at, 3 * carve._CHUNK))
    assert [offset for offset, _ in carve.file_candidates(path, 100)] == [at]


def test_the_search_stops_past_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(carve, "_CHUNK", 4096)
    path = tmp_path / "many"
    path.write_bytes(b"....PK\x03\x04" * 10_000)
    assert len(carve.file_candidates(path, 5)) == 6  # one over: over the entry budget
