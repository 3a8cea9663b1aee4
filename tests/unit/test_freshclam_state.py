"""freshclam.dat as libfreshclam (ClamAV 1.x, x86_64) writes it: where its cool-down is."""

from __future__ import annotations

import datetime as dt
import struct

from functions.shared.freshclam import FRESHCLAM_DAT, is_freshclam_state, retry_after


def freshclam_dat(retry_after_s: int) -> bytes:
    """ "FreshClamData", {uint32 version; char uuid[37]; 7 bytes padding; time_t
    retry_after}, then the last cf-ray id (21 bytes)."""
    uuid = b"0d6f2695-70eb-4a70-a205-a5e34c5ffdcf\0"
    return b"FreshClamData" + struct.pack("<I37s7xq", 1, uuid, retry_after_s) + b"\0" * 21


def test_the_cool_down_is_read_from_freshclams_state(tmp_path):
    (tmp_path / FRESHCLAM_DAT).write_bytes(freshclam_dat(1_800_000_000))
    four_hours_before = dt.datetime.fromtimestamp(1_800_000_000 - 4 * 3600, dt.UTC)
    assert retry_after(tmp_path, now=four_hours_before) == dt.datetime.fromtimestamp(
        1_800_000_000, dt.UTC
    )
    assert len(freshclam_dat(0)) == 90  # the size freshclam 1.4.6 writes


def test_a_cool_down_beyond_a_week_is_cut_to_one_in_the_file_too(tmp_path):
    # No CDN sets one that long; freshclam would obey it silently for ever.
    now = dt.datetime.fromtimestamp(1_800_000_000, dt.UTC)
    for far in (1_800_000_000 + 30 * 24 * 3600, 300_000_000_000, 2**63 - 1):
        (tmp_path / FRESHCLAM_DAT).write_bytes(freshclam_dat(far))
        week = now + dt.timedelta(days=7)
        assert retry_after(tmp_path, now=now) == week
        (kept,) = struct.unpack_from("<q", (tmp_path / FRESHCLAM_DAT).read_bytes(), 61)
        assert kept == int(week.timestamp())


def test_no_cool_down_without_one_set_or_without_the_file(tmp_path):
    assert retry_after(tmp_path) is None
    (tmp_path / FRESHCLAM_DAT).write_bytes(freshclam_dat(0))
    assert retry_after(tmp_path) is None


def test_something_else_is_not_taken_for_freshclams_state(tmp_path):
    (tmp_path / FRESHCLAM_DAT).write_bytes(b"not freshclam's" * 10)
    assert retry_after(tmp_path) is None
    assert not is_freshclam_state(b"FreshClamData")  # too short to hold retry_after
