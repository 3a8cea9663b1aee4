"""S3's limit of 10 tags: the status tag always survives."""

from __future__ import annotations

import pytest

from functions.shared.tags import S3_MAX_TAGS, merge_tags, tag_value

OURS = {"scan-status": "clean", "scan-time": "2026-11-27T12:00:00Z", "scan-engine": "ClamAV 1.4/x"}


def existing(n: int) -> list[dict[str, str]]:
    return [{"Key": f"k{i:02d}", "Value": f"v{i}"} for i in range(n)]


def test_no_existing_tags():
    merged = merge_tags([], OURS)
    assert {t["Key"]: t["Value"] for t in merged.tags} == OURS
    assert merged.dropped == []


def test_nine_existing_tags_keep_all_theirs_and_the_status():
    merged = merge_tags(existing(9), OURS)
    keys = [t["Key"] for t in merged.tags]
    assert len(keys) == S3_MAX_TAGS
    assert [f"k{i:02d}" for i in range(9)] == keys[:9]
    assert keys[9] == "scan-status"
    assert merged.dropped == ["scan-engine", "scan-time"]


def test_ten_existing_tags_make_room_for_the_status():
    merged = merge_tags(existing(10), OURS)
    keys = [t["Key"] for t in merged.tags]
    assert len(keys) == S3_MAX_TAGS
    assert "scan-status" in keys
    # The tag that sorts last is the one given up, and it is reported.
    assert "k09" not in keys
    assert merged.dropped == ["scan-engine", "scan-time", "k09"]


def test_rescan_replaces_our_tags_in_place():
    previous = [{"Key": "scan-status", "Value": "unscannable"}, {"Key": "team", "Value": "a"}]
    merged = merge_tags(previous, OURS)
    values = {t["Key"]: t["Value"] for t in merged.tags}
    assert values["scan-status"] == "clean"
    assert values["team"] == "a"
    assert len(merged.tags) == 4


def test_seven_existing_tags_fit_exactly():
    merged = merge_tags(existing(7), OURS)
    assert len(merged.tags) == 10
    assert merged.dropped == []


def test_status_is_required():
    with pytest.raises(ValueError, match="scan-status"):
        merge_tags([], {"scan-time": "x"})


def test_values_are_made_valid_for_s3():
    assert tag_value("Win.Trojan.Agent-123 {x}") == "Win.Trojan.Agent-123 _x_"
    assert len(tag_value("a" * 300)) == 256


def test_every_scan_key_is_removed_before_ours_are_written():
    # GIVEN an uploader's forged status and reason, and an earlier scan's leftovers
    forged = [
        {"Key": "scan-status", "Value": "clean"},
        {"Key": "scan-reason", "Value": "forged"},
        {"Key": "Scan-Signature", "Value": "case does not help"},
        {"Key": "owner", "Value": "x"},
    ]
    # WHEN a clean verdict is merged
    merged = merge_tags(forged, OURS)
    # THEN only our scan-* keys remain, and the uploader's own tag is kept
    assert {t["Key"]: t["Value"] for t in merged.tags} == {"owner": "x", **OURS}
    # AND the removed keys are not reported as dropped for the tag limit
    assert merged.dropped == []


def test_a_rescan_from_unscannable_to_clean_drops_the_old_reason():
    previous = [
        {"Key": "scan-status", "Value": "unscannable"},
        {"Key": "scan-reason", "Value": "too-large"},
    ]
    merged = merge_tags(previous, OURS)
    assert "scan-reason" not in {t["Key"] for t in merged.tags}


def tagged(status: str, when: str) -> list[dict[str, str]]:
    return [{"Key": "scan-status", "Value": status}, {"Key": "scan-time", "Value": when}]


OLD, NEW = "2026-11-28T10:00:00.000Z", "2026-11-28T11:00:00Z"


def test_an_older_scan_never_lowers_a_newer_status():
    from functions.shared.tags import newer_status

    # A stale execution redriven late must not turn a newer infected into clean.
    assert newer_status(tagged("infected", NEW), "clean", OLD) == "infected"
    assert newer_status(tagged("unscannable", NEW), "clean", OLD) == "unscannable"
    assert newer_status(tagged("clean", NEW), "clean", OLD) == "clean"  # harmless either way


def test_stricter_or_infected_or_newer_writes_go_ahead():
    from functions.shared.tags import newer_status

    assert newer_status(tagged("clean", NEW), "unscannable", OLD) is None  # fails closed
    assert newer_status(tagged("clean", NEW), "infected", OLD) is None  # infected, always
    assert newer_status(tagged("infected", OLD), "clean", NEW) is None  # ours is newer
    # A forged future clean cannot keep our stricter verdict off the object.
    assert newer_status(tagged("clean", "2099-01-01T00:00:00Z"), "error", OLD) is None
    assert newer_status(tagged("clean", "not a time"), "clean", OLD) is None
    assert newer_status([], "clean", OLD) is None


def test_a_failed_run_never_replaces_infected_or_unscannable_however_old():
    from functions.shared.tags import newer_status

    # A failure says nothing about the content: the stricter finding stays.
    assert newer_status(tagged("infected", OLD), "error", NEW) == "infected"
    assert newer_status(tagged("unscannable", OLD), "error", NEW) == "unscannable"
    assert newer_status(tagged("infected", "not a time"), "error", NEW) == "infected"
    # ...but a clean (or a forged clean) gives way to error: fail closed.
    assert newer_status(tagged("clean", OLD), "error", NEW) is None
