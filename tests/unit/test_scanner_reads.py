"""How the scanner reads an object: what S3's answers mean (botocore's Stubber)."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from functions.scan_object.scanner import Scanner
from functions.shared.config import Settings
from functions.shared.contracts import DefinitionsRef, ObjectRef

DEFS = DefinitionsRef(source="cache", version="v1", bucket="d", key="k", sha256="0" * 64)


class NoEngine:
    """The reads below end before the engine is needed; touching it is a bug."""

    loaded_version = None

    def __getattr__(self, name):
        raise AssertionError(f"the engine was used: {name}")


@pytest.fixture
def s3():
    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        yield client, stubber


def scanner(client, tmp_path: Path) -> Scanner:
    settings = Settings.from_env({"CLAMAV_WORK_DIR": str(tmp_path), "MAX_OBJECT_SIZE_MB": "1"})
    return Scanner(client, settings, engine=NoEngine())


def test_sse_c_object_is_unscannable_not_gone(s3, tmp_path):
    # HEAD of an object encrypted with a customer-provided key, without that
    # key, answers 400: the content cannot be read, so it cannot be called clean,
    # and it must not be reported as gone either.
    client, stubber = s3
    stubber.add_client_error("head_object", service_error_code="400", http_status_code=400)
    result = scanner(client, tmp_path).scan(ObjectRef("b", "secret.bin", version_id="v"), DEFS)
    assert (result.verdict, result.reason) == ("unscannable", "encrypted")


def test_missing_version_is_gone(s3, tmp_path):
    client, stubber = s3
    stubber.add_client_error("head_object", service_error_code="404", http_status_code=404)
    result = scanner(client, tmp_path).scan(ObjectRef("b", "k", version_id="v"), DEFS)
    assert (result.verdict, result.reason) == ("skipped", "object-gone")


def test_unversioned_read_is_pinned_to_the_events_etag_and_follows_an_overwrite(s3, tmp_path):
    # The key no longer holds the event's content (412): S3 may have sent one
    # event for racing writes, so the scanner reads what is there now, by its
    # own eTag, instead of skipping it. Here the newer content is too large.
    client, stubber = s3
    stubber.add_client_error(
        "head_object",
        service_error_code="412",
        http_status_code=412,
        expected_params={"Bucket": "b", "Key": "k", "IfMatch": '"abc"'},
    )
    stubber.add_response(
        "head_object",
        {"ETag": '"def"', "ContentLength": 5 * 1024 * 1024},
        expected_params={"Bucket": "b", "Key": "k"},
    )
    stubber.add_response(
        "head_object",
        {"ETag": '"def"', "ContentLength": 5 * 1024 * 1024},
        expected_params={"Bucket": "b", "Key": "k", "IfMatch": '"def"'},
    )
    result = scanner(client, tmp_path).scan(ObjectRef("b", "k", etag="abc"), DEFS)
    assert (result.verdict, result.reason) == ("unscannable", "too-large")
    assert result.scanned_etag == "def"
    assert result.applies_to(ObjectRef("b", "k", etag="abc")).etag == "def"


def test_an_overwritten_key_that_is_gone_by_now_is_skipped(s3, tmp_path):
    client, stubber = s3
    stubber.add_client_error("head_object", service_error_code="412", http_status_code=412)
    stubber.add_client_error("head_object", service_error_code="404", http_status_code=404)
    result = scanner(client, tmp_path).scan(ObjectRef("b", "k", etag="abc"), DEFS)
    assert (result.verdict, result.reason) == ("skipped", "object-gone")


@pytest.mark.parametrize("code", ["403", "AccessDenied", "KMS.DisabledException"])
def test_content_the_scanner_may_not_read_is_unscannable_access_denied(s3, tmp_path, code):
    # A bucket policy or a KMS key the scanner may not use: never clean, never
    # a failed run that leaves the object untagged.
    client, stubber = s3
    stubber.add_client_error("head_object", service_error_code=code, http_status_code=403)
    result = scanner(client, tmp_path).scan(ObjectRef("b", "k", version_id="v"), DEFS)
    assert (result.verdict, result.reason) == ("unscannable", "access-denied")


@pytest.mark.parametrize(
    "head",
    [
        {"StorageClass": "GLACIER"},
        {"StorageClass": "DEEP_ARCHIVE"},
        {"StorageClass": "GLACIER", "Restore": 'ongoing-request="true"'},
        {"StorageClass": "INTELLIGENT_TIERING", "ArchiveStatus": "ARCHIVE_ACCESS"},
        {"StorageClass": "INTELLIGENT_TIERING", "ArchiveStatus": "DEEP_ARCHIVE_ACCESS"},
    ],
)
def test_archived_object_is_unscannable_without_a_download(s3, tmp_path, head):
    client, stubber = s3
    stubber.add_response("head_object", {"ContentLength": 10, **head})
    result = scanner(client, tmp_path).scan(ObjectRef("b", "cold", version_id="v"), DEFS)
    assert (result.verdict, result.reason) == ("unscannable", "archived")
    stubber.assert_no_pending_responses()


def test_restored_and_instantly_readable_objects_are_not_archived():
    from functions.scan_object.scanner import is_archived

    restored = 'ongoing-request="false", expiry-date="Fri, 21 Dec 2026 00:00:00 GMT"'
    assert not is_archived({"StorageClass": "GLACIER", "Restore": restored})
    assert not is_archived({"StorageClass": "GLACIER_IR"})
    assert not is_archived({"StorageClass": "INTELLIGENT_TIERING"})
    assert not is_archived({})


def test_too_large_is_decided_before_any_download(s3, tmp_path):
    client, stubber = s3
    stubber.add_response("head_object", {"ContentLength": 2 * 1024 * 1024})
    result = scanner(client, tmp_path).scan(ObjectRef("b", "big", version_id="v"), DEFS)
    assert (result.verdict, result.reason) == ("unscannable", "too-large")
    stubber.assert_no_pending_responses()


def test_leftovers_of_a_crashed_invocation_are_removed(tmp_path, s3):
    (tmp_path / "objects").mkdir()
    (tmp_path / "objects" / "partial").write_bytes(b"x" * 10)
    (tmp_path / "defs" / ".extract-1").mkdir(parents=True)
    (tmp_path / "defs" / "v1").mkdir()
    scanner(s3[0], tmp_path)
    assert not (tmp_path / "objects").exists()
    assert not (tmp_path / "defs" / ".extract-1").exists()
    assert (tmp_path / "defs" / "v1").is_dir()  # loaded definitions stay


def test_unversioned_sse_c_object_is_still_tagged_unscannable(s3):
    from functions.apply_verdict.actions import VerdictApplier
    from functions.shared.contracts import ScanResult

    # HEAD If-Match cannot be answered for SSE-C without the key (400): the
    # tagging goes ahead instead of failing the run.
    client, stubber = s3
    stubber.add_client_error("head_object", service_error_code="400", http_status_code=400)
    stubber.add_response("get_object_tagging", {"TagSet": []})
    stubber.add_response("put_object_tagging", {})
    scan = ScanResult(verdict="unscannable", reason="encrypted", scanned_at="2026-11-27T12:00:00Z")
    action = VerdictApplier(client, None).apply(ObjectRef("b", "k", etag="abc"), scan)
    assert action["action"] == "tagged"
    assert action["tags"]["scan-reason"] == "encrypted"
