"""What a rescan picks, and how it reads the items a listing or an inventory hands it."""

from __future__ import annotations

import pytest

from functions.rescan_batch.selection import Mode, Request, _wanted, listed_object


def request(mode: Mode, **kw) -> Request:
    return Request(bucket="uploads", run_id="r1", mode=mode, **kw)


SCANNED = {
    "scan-status": "clean",
    "scan-time": "2026-11-01T00:00:00Z",
    "scan-engine": "ClamAV 1.4.6/v7",
}


@pytest.mark.parametrize(
    ("tags", "wanted"),
    [
        ({}, True),  # never scanned
        ({"scan-status": "error", "scan-time": "2026-11-01T00:00:00Z"}, True),  # a failed run
        ({"scan-status": "pending"}, True),  # an application's own status, not a verdict
        ({"scan-status": "clean"}, True),  # a verdict without our scan time: not ours
        (SCANNED, False),
        # We write exactly these keys (and remove other spellings): not ours.
        ({"Scan-Status": "infected", "SCAN-TIME": "2026-11-01T00:00:00Z"}, True),
        ({"scan-status": "unscannable", "scan-time": "2026-11-01T00:00:00Z"}, False),
    ],
)
def test_unscanned_means_no_finished_scan_of_ours(tags, wanted):
    assert _wanted(request(Mode.UNSCANNED), tags) is wanted


def test_outdated_picks_old_scans_and_other_definitions():
    assert _wanted(request(Mode.OUTDATED, scanned_before="2026-11-15T00:00:00Z"), SCANNED)
    assert not _wanted(request(Mode.OUTDATED, scanned_before="2026-10-01T00:00:00Z"), SCANNED)
    assert _wanted(request(Mode.OUTDATED, definitions_version="v8"), SCANNED)
    assert not _wanted(request(Mode.OUTDATED, definitions_version="v7"), SCANNED)


@pytest.mark.parametrize("etag_field", ["Etag", "ETag", "eTag"])
def test_a_listed_item_s_etag_is_read_whatever_its_case(etag_field):
    # Step Functions' ListObjectsV2 reader says Etag; boto3 ETag; inventories vary.
    obj = listed_object("uploads", {"Key": "a.txt", "Size": 3, etag_field: '"abc"'})
    assert (obj.key, obj.size, obj.etag) == ("a.txt", 3, "abc")


def test_inventory_keys_are_url_decoded_and_listing_keys_are_not():
    row = {"Bucket": "uploads", "Key": "dir/my%20report+2026.pdf", "Size": "10"}
    assert listed_object("uploads", row, inventory=True).key == "dir/my report 2026.pdf"
    assert listed_object("uploads", row).key == "dir/my%20report+2026.pdf"


class _AuditTable:
    """The audit table's answer to one Query: these items, newest first."""

    def __init__(self, *items: dict) -> None:
        from boto3.dynamodb.types import TypeSerializer

        serialize = TypeSerializer().serialize
        self.items = [{k: serialize(v) for k, v in item.items()} for item in items]

    def query(self, **args: object) -> dict:
        # One object's items, newest first.
        assert args["ExpressionAttributeValues"] == {":pk": {"S": "s3://uploads/a.txt"}}
        assert args["ScanIndexForward"] is False
        return {"Items": self.items}


def _scan(verdict: str, at: str, version: str = "v1", **more: object) -> dict:
    return {"verdict": verdict, "scannedAt": at, "versionId": version, **more}


@pytest.mark.parametrize(
    ("items", "tags", "recorded"),
    [
        # the tags of the newest finished scan; the tag budget left out the engine
        ([_scan("clean", "t2")], {"scan-status": "clean", "scan-time": "t2"}, True),
        # an infected verdict's tags carry no engine either
        ([_scan("infected", "t2")], {"scan-status": "infected", "scan-time": "t2"}, True),
        # an engine tag must name the scan's definitions
        (
            [_scan("clean", "t2", definitionsVersion="d2")],
            {"scan-status": "clean", "scan-time": "t2", "scan-engine": "ClamAV 1.4.6/d1"},
            False,
        ),
        # an older scan's tags, copied back, after a newer scan said infected
        (
            [_scan("infected", "t3"), _scan("clean", "t2")],
            {"scan-status": "clean", "scan-time": "t2"},
            False,
        ),
        # a failed run does not count; the scan before it does
        (
            [_scan("error", "t3", failed=True), _scan("clean", "t2")],
            {"scan-status": "clean", "scan-time": "t2"},
            True,
        ),
        # another version's scan says nothing about this one
        ([_scan("clean", "t2", version="v0")], {"scan-status": "clean", "scan-time": "t2"}, False),
        ([], {"scan-status": "clean", "scan-time": "t2"}, False),
    ],
)
def test_a_tag_counts_only_as_the_newest_finished_scan_of_that_version(items, tags, recorded):
    from functions.rescan_batch.selection import Selector
    from functions.shared.contracts import ObjectRef

    selector = Selector(None, None, "", "uploads", _AuditTable(*items), "scan-audit")
    assert selector.recorded(ObjectRef("uploads", "a.txt", "v1"), tags) is recorded
