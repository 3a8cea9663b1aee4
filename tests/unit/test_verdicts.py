"""ClamAV's answers as verdicts: skipped content is never clean."""

from __future__ import annotations

import pytest

from functions.scan_object.engine import RawResult, parse_reply
from functions.scan_object.scanner import classify
from functions.shared.errors import ScanEngineUnavailable, ScanFailed


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("/tmp/x: OK", RawResult(False, None)),
        ("/tmp/x: Eicar-Test-Signature FOUND", RawResult(True, "Eicar-Test-Signature")),
        (
            "/tmp/x: Heuristics.Limits.Exceeded.MaxFileSize FOUND",
            RawResult(True, "Heuristics.Limits.Exceeded.MaxFileSize"),
        ),
    ],
)
def test_replies(reply, expected):
    assert parse_reply("/tmp/x", reply) == expected


def test_error_reply_is_a_named_scan_failure():
    with pytest.raises(ScanFailed, match="lstat"):
        parse_reply("/tmp/x", "/tmp/x: lstat() failed: No such file or directory. ERROR")


def test_out_of_memory_is_transient():
    with pytest.raises(ScanEngineUnavailable):
        parse_reply("/tmp/x", "/tmp/x: Can't allocate memory ERROR")


def test_garbage_reply_is_engine_trouble():
    with pytest.raises(ScanEngineUnavailable):
        parse_reply("/tmp/x", "")


@pytest.mark.parametrize(
    ("signature", "verdict", "reason"),
    [
        (None, "clean", None),
        ("Win.Test.EICAR_HDB-1", "infected", None),
        ("Heuristics.Limits.Exceeded.MaxScanSize", "unscannable", "limits-exceeded"),
        ("Heuristics.Limits.Exceeded.MaxRecursion", "unscannable", "limits-exceeded"),
        ("Heuristics.Encrypted.Zip", "unscannable", "encrypted"),
        ("Heuristics.Encrypted.PDF", "unscannable", "encrypted"),
        ("Heuristics.Phishing.Email.SpoofedDomain", "infected", None),
    ],
)
def test_classify(signature, verdict, reason):
    assert classify(RawResult(signature is not None, signature)) == (verdict, reason)
