"""A zip's central directory, read with a bound, and where its entries really start."""

from __future__ import annotations

import io
import zipfile

from functions.scan_object.readers import zips


def zipped(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(count):
            archive.writestr(f"f{i}", b"x")
    return buffer.getvalue()


def local_headers(data: bytes) -> set[int]:
    found, at = set(), data.find(b"PK\x03\x04")
    while at >= 0:
        found.add(at)
        at = data.find(b"PK\x03\x04", at + 1)
    return found


def test_a_zip_behind_something_else_is_found_where_it_is(tmp_path):
    data = b"\x89PNG not really\n" * 10 + zipped(3)
    path = tmp_path / "image-then.zip"
    path.write_bytes(data)
    assert zips.listed_offsets(path, 100) == local_headers(data)


def test_zip64_end_records_are_followed(tmp_path):
    # Over 65,535 entries Python writes the zip64 end record and locator; the
    # directory ends at the zip64 record, not at the classic one.
    data = b"prefix" * 100 + zipped(65_600)
    path = tmp_path / "many.zip"
    path.write_bytes(data)
    offsets = zips.listed_offsets(path, 100)
    assert len(offsets) == 101  # bounded: at most cap + 1 read
    assert offsets <= local_headers(data)
    assert zips.more_entries_than(path, 65_599)
    assert not zips.more_entries_than(path, 65_600)
