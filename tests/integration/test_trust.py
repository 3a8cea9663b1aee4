"""scan-status can be trusted: forged tags, unreadable objects, failed quarantines, ingest.

Real ClamAV, the real ASL in moto, faults as AWS would answer them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from functions.shared.contracts import ObjectRef
from functions.shared.errors import ScanEngineUnavailable
from functions.shared.naming import execution_name
from scanctl import samples
from tests.conftest import load_event

FORGED = {"scan-status": "clean", "scan-reason": "forged", "owner": "x"}


def test_a_forged_status_and_reason_are_replaced_and_the_owners_tag_kept(harness):
    report = harness.scan("forged.txt", b"harmless", tags=FORGED)

    assert report.output["scan"]["verdict"] == "clean"
    tags = harness.tags("forged.txt", version_id=report.input["object"]["versionId"])
    assert tags["owner"] == "x"
    assert "scan-reason" not in tags
    assert tags["scan-status"] == "clean"
    assert tags["scan-engine"].startswith("ClamAV ")  # ours, not the uploader's


def test_eicar_forged_clean_whose_scan_fails_ends_tagged_by_us_never_clean(harness):
    # GIVEN EICAR uploaded with a forged clean tag, and an engine down through every retry
    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)

    report = harness.scan("forged.com", samples.EICAR, tags=FORGED)

    # THEN the run failed where it failed, and the failure recorder replaced the tags
    assert report.status == "FAILED"
    assert report.failed_state == "Scan Object"
    tags = harness.tags("forged.com", version_id=report.input["object"]["versionId"])
    assert tags == {"owner": "x", "scan-status": "error", "scan-reason": "ScanEngineUnavailable",
                    "scan-time": tags["scan-time"]}  # fmt: skip
    [item] = harness.audit_items("forged.com")
    assert item["objectMarking"]["markedAs"] == "error"


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
@pytest.mark.parametrize("operation", ["CopyObject", "DeleteObject"])
def test_a_quarantine_that_fails_for_good_leaves_the_object_marked_infected(
    make_harness, aws_faults, versioned, operation
):
    # GIVEN S3 answering SlowDown to every copy (or delete) until the retries run out
    harness = make_harness(versioned=versioned)
    calls = aws_faults.fail("s3", operation, "SlowDown", times=6)

    report = harness.scan("stuck.com", samples.EICAR, tags=FORGED)

    # THEN the execution is FAILED at Quarantine Or Delete...
    assert len(calls) == 6
    assert report.status == "FAILED"
    assert report.failed_state == "Quarantine Or Delete"
    # ...and the exact object says infected, whoever tagged it before
    version = report.input["object"]["versionId"]
    tags = harness.tags("stuck.com", version_id=version)
    assert tags["scan-status"] == "infected"
    assert tags["scan-signature"].startswith(samples.EICAR_SIGNATURE)
    assert tags["owner"] == "x"
    assert "scan-reason" not in tags
    [item] = harness.audit_items("stuck.com")
    assert item["verdict"] == "infected"
    assert item["failed"] is True
    assert "scan-status=infected" in item["error"]["cause"]


@pytest.mark.parametrize("code", ["AccessDenied", "SlowDown"])
def test_a_refused_infected_tag_does_not_stop_the_quarantine(harness, aws_faults, code):
    # GIVEN a versioned bucket that refuses (or throttles past every retry) the
    # scanner's tag on an infected version with a forged clean tag
    aws_faults.fail("s3", "PutObjectTagging", code, Bucket=harness.options.source_bucket)

    report = harness.scan("tag-refused.com", samples.EICAR, tags=FORGED)

    # THEN the version is still copied to quarantine and deleted: nobody reads it
    version = report.input["object"]["versionId"]
    assert report.status == "SUCCEEDED"
    assert report.output["action"]["action"] == "quarantined"
    assert code in report.output["action"]["tagError"]
    s3 = harness.client("s3")
    source = harness.options.source_bucket
    left = s3.list_object_versions(Bucket=source, Prefix="tag-refused.com").get("Versions", [])
    assert version not in [v["VersionId"] for v in left]
    copy = s3.get_object_tagging(Bucket="quarantine", Key="tag-refused.com")["TagSet"]
    assert {t["Key"]: t["Value"] for t in copy}["scan-source-version"] == version
    [item] = harness.audit_items("tag-refused.com")
    assert (item["verdict"], item["action"], item["failed"]) == ("infected", "quarantined", False)


def test_when_even_the_infected_tag_cannot_be_written_the_audit_says_so(make_harness, aws_faults):
    harness = make_harness(versioned=False)
    aws_faults.fail("s3", "CopyObject", "SlowDown")
    aws_faults.fail("s3", "PutObjectTagging", "SlowDown")

    report = harness.scan("unmarked.com", samples.EICAR)

    assert report.status == "FAILED"
    [item] = harness.audit_items("unmarked.com")
    assert "could NOT be tagged scan-status=infected" in item["error"]["cause"]
    assert item["objectMarking"]["markedAs"] is None
    assert "NOT" in item["objectMarking"]["note"]


def test_an_archived_upload_is_unscannable_and_scanned_once_restored(harness):
    # GIVEN EICAR uploaded straight into Glacier Flexible Retrieval
    archived = harness.scan("cold/eicar.com", samples.EICAR, StorageClass="GLACIER")

    # THEN it is unscannable (archived), tagged so, audited, and the run succeeded
    assert archived.status == "SUCCEEDED"
    assert (archived.output["scan"]["verdict"], archived.output["scan"]["reason"]) == (
        "unscannable",
        "archived",
    )
    version = archived.input["object"]["versionId"]
    assert harness.tags("cold/eicar.com", version_id=version)["scan-reason"] == "archived"

    # WHEN someone restores it (S3 announces ObjectRestore:Completed)
    s3 = harness.client("s3")
    s3.restore_object(
        Bucket="uploads", Key="cold/eicar.com", VersionId=version, RestoreRequest={"Days": 1}
    )
    s3.head_object(Bucket="uploads", Key="cold/eicar.com", VersionId=version)  # moto: completes
    [restored] = harness.wait(harness.drain())

    # THEN that restore is scanned, in an execution of its own, and EICAR is caught
    assert restored.name != archived.name
    assert restored.name.startswith("restored-")
    assert restored.input["trigger"]["eventName"] == "ObjectRestore:Completed"
    assert restored.output["scan"]["verdict"] == "infected"
    assert restored.output["action"]["action"] == "quarantined"


@pytest.mark.parametrize("code", ["AccessDenied", "KMS.DisabledException"])
def test_content_the_scanner_may_not_read_is_unscannable_access_denied(harness, aws_faults, code):
    # GIVEN an object whose content S3 (or its KMS key) refuses the scanner
    aws_faults.fail("s3", "GetObject", code, Bucket="uploads")

    report = harness.scan("locked.bin", b"secret", tags=FORGED)

    assert report.status == "SUCCEEDED"
    assert (report.output["scan"]["verdict"], report.output["scan"]["reason"]) == (
        "unscannable",
        "access-denied",
    )
    tags = harness.tags("locked.bin", version_id=report.input["object"]["versionId"])
    assert (tags["scan-status"], tags["scan-reason"]) == ("unscannable", "access-denied")
    assert harness.audit_items("locked.bin")[0]["reason"] == "access-denied"


def test_a_dropped_connection_while_tagging_is_retried(harness, aws_faults):
    dropped = aws_faults.raise_(
        "s3", "PutObjectTagging", EndpointConnectionError(endpoint_url="https://s3")
    )

    report = harness.scan("blip.txt", b"hello")

    assert len(dropped) == 1
    assert report.status == "SUCCEEDED"
    assert report.count("LambdaFunctionFailed", "Tag As Clean") == 1
    assert harness.tags("blip.txt")["scan-status"] == "clean"


def test_an_event_for_another_bucket_starts_nothing(harness):
    harness.drain()  # S3's test event
    forged = json.loads(json.dumps(_event("someone-elses-bucket", "evil.txt")))
    harness.client("sqs").send_message(QueueUrl=harness.queue_url, MessageBody=json.dumps(forged))

    assert harness.drain() == []
    sfn = harness.client("stepfunctions")
    assert sfn.list_executions(stateMachineArn=harness.state_machine_arn)["executions"] == []
    assert harness.dlq_messages() == []  # consumed on purpose, not failed


def test_every_infected_version_keeps_its_own_quarantine_copy(harness):
    first = harness.scan("twice.com", samples.EICAR)
    second = harness.scan("twice.com", samples.EICAR)  # a second version, same content

    copies = [
        first.output["action"]["quarantine"]["versionId"],
        second.output["action"]["quarantine"]["versionId"],
    ]
    assert None not in copies
    assert copies[0] != copies[1]
    versions = harness.client("s3").list_object_versions(Bucket="quarantine", Prefix="twice.com")[
        "Versions"
    ]
    assert {v["VersionId"] for v in versions} == set(copies)
    [item, _] = harness.audit_items("twice.com")
    assert item["quarantine"]["bucketVersioning"] == "Enabled"


def test_an_unversioned_quarantine_bucket_is_recorded_as_such(make_harness):
    harness = make_harness(quarantine_versioned=False)

    report = harness.scan("once.com", samples.EICAR)

    assert report.output["action"]["quarantine"]["bucketVersioning"] == "Disabled"
    [item] = harness.audit_items("once.com")
    assert item["quarantine"]["bucketVersioning"] == "Disabled"


def test_a_quarantine_bucket_whose_versioning_changes_is_recorded_as_it_is_now(harness):
    first = harness.scan("before.com", samples.EICAR)
    assert first.output["action"]["quarantine"]["bucketVersioning"] == "Enabled"

    # WHEN versioning on the quarantine bucket is suspended (or the bucket recreated)
    harness.client("s3").put_bucket_versioning(
        Bucket="quarantine", VersioningConfiguration={"Status": "Suspended"}
    )
    second = harness.scan("after.com", samples.EICAR)

    # THEN the next quarantine records it as it is, not as a container remembered it
    assert second.output["action"]["quarantine"]["bucketVersioning"] == "Suspended"


def _event(bucket: str, key: str) -> dict:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "eventTime": "2026-11-28T12:00:00.000Z",
                "s3": {
                    "bucket": {"name": bucket},
                    "object": {"key": key, "size": 4, "eTag": "abc", "sequencer": "01"},
                },
            }
        ]
    }


# -- infected stays infected ---------------------------------------------------------------------


def _kept_infected(harness: Any, aws_faults: Any, key: str) -> Any:
    """EICAR whose version S3 will not let us delete (Object Lock, a policy): kept,
    tagged infected, the run FAILED at Quarantine Or Delete."""
    source = harness.options.source_bucket
    aws_faults.fail("s3", "DeleteObject", "AccessDenied", Bucket=source, Key=key)
    first = harness.scan(key, samples.EICAR, tags=FORGED)
    assert (first.status, first.failed_state) == ("FAILED", "Quarantine Or Delete")
    return first


def _without_eicar(directory: Path) -> Path:
    """A definitions set that lacks EICAR's signature (a rollback, a custom set)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "other.ndb").write_text("Other.Only:0:*:" + b"nothing-we-upload".hex() + "\n")
    return directory


def _rescan(harness: Any, first: Any) -> Any:
    """The same version scanned again, as a rescan or a re-run would."""
    [report] = harness.wait([harness.start(first.input)])
    return report


def _status(harness: Any, key: str, version: str) -> tuple[str | None, str | None]:
    tags = harness.tags(key, version_id=version)
    return tags.get("scan-status"), tags.get("scan-signature")


def test_a_kept_infected_version_stays_infected_when_a_set_without_its_signature_calls_it_clean(
    harness, aws_faults, tmp_path
):
    # GIVEN an infected version S3 will not let us delete, tagged infected
    first = _kept_infected(harness, aws_faults, "kept.com")
    version = first.input["object"]["versionId"]

    # WHEN a set without EICAR's signature is published and the version scanned again
    harness.publish_definitions(_without_eicar(tmp_path / "no-eicar"))
    second = _rescan(harness, first)

    # THEN that scan's clean is not applied: the version is still infected, quarantine
    # attempted again (and refused again, so the run fails, saying why)
    assert second.input["object"]["versionId"] == version
    assert (second.status, second.failed_state) == ("FAILED", "Tag As Clean")
    status, signature = _status(harness, "kept.com", version)
    assert status == "infected"
    assert signature.startswith(samples.EICAR_SIGNATURE)
    items = harness.audit_items("kept.com")
    assert [i["verdict"] for i in items] == ["infected", "infected"]
    assert items[-1]["scanVerdict"] == "clean"
    assert items[-1]["held"]["signature"].startswith(samples.EICAR_SIGNATURE)
    assert "held infected" in items[-1]["error"]["cause"]


def test_a_kept_infected_version_is_quarantined_when_a_later_clean_scan_may_delete_it(
    harness, aws_faults, tmp_path
):
    # GIVEN a kept infected version, and S3 that now lets us delete it
    first = _kept_infected(harness, aws_faults, "later.com")
    version = first.input["object"]["versionId"]
    aws_faults.clear()

    # WHEN a set without EICAR's signature scans it again
    harness.publish_definitions(_without_eicar(tmp_path / "no-eicar"))
    second = _rescan(harness, first)

    # THEN it is quarantined as infected: gone from the bucket, its copy in quarantine
    assert second.status == "SUCCEEDED"
    assert second.output["scan"]["verdict"] == "clean"
    assert second.output["action"]["action"] == "quarantined"
    source = harness.options.source_bucket
    left = harness.client("s3").list_object_versions(Bucket=source, Prefix="later.com")
    assert version not in [v["VersionId"] for v in left.get("Versions", [])]
    assert [i["verdict"] for i in harness.audit_items("later.com")] == ["infected", "infected"]


def test_a_failed_rescan_of_a_kept_infected_version_leaves_it_infected(harness, aws_faults):
    # GIVEN a kept infected version
    first = _kept_infected(harness, aws_faults, "failed-again.com")
    version = first.input["object"]["versionId"]

    # WHEN it is scanned again and the engine is down through every retry
    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)
    second = _rescan(harness, first)

    # THEN the failed run does not turn it into error: infected, with its signature
    assert (second.status, second.failed_state) == ("FAILED", "Scan Object")
    status, signature = _status(harness, "failed-again.com", version)
    assert status == "infected"
    assert signature.startswith(samples.EICAR_SIGNATURE)
    last = harness.audit_items("failed-again.com")[-1]
    assert (last["verdict"], last["failed"]) == ("infected", True)
    assert last["objectMarking"]["markedAs"] == "infected"


# -- poison input ---------------------------------------------------------------------------------


def _drop_notifications(harness: Any) -> None:
    """S3's notifications so far, taken off the queue unread (as if lost)."""
    sqs = harness.client("sqs")
    while messages := sqs.receive_message(QueueUrl=harness.queue_url, MaxNumberOfMessages=10).get(
        "Messages", []
    ):
        for message in messages:
            sqs.delete_message(QueueUrl=harness.queue_url, ReceiptHandle=message["ReceiptHandle"])


def test_a_body_mixing_a_removal_a_malformed_record_and_an_upload_scans_the_upload(harness):
    # GIVEN an object whose own notification is gone, and a message whose body
    # holds an ObjectRemoved record, a malformed one and the object's ObjectCreated
    sqs = harness.client("sqs")
    put = harness.upload("mixed.txt", b"fine")
    _drop_notifications(harness)
    good = load_event("s3_object_created.json")["Records"][0]
    good["s3"]["object"] = {
        "key": "mixed.txt", "size": 4, "eTag": put["ETag"].strip('"'),
        "versionId": put["VersionId"], "sequencer": "0A",
    }  # fmt: skip
    removed = json.loads(json.dumps(good)) | {"eventName": "ObjectRemoved:Delete"}
    malformed = {"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {}}
    body = json.dumps({"Records": [removed, malformed, good]})
    sqs.send_message(QueueUrl=harness.queue_url, MessageBody=body)

    harness.drain()

    # THEN the upload is scanned and tagged, whatever its neighbours were
    [report] = harness.wait([execution_name(ObjectRef("uploads", "mixed.txt", put["VersionId"]))])
    assert report.status == "SUCCEEDED"
    assert harness.tags("mixed.txt", version_id=put["VersionId"])["scan-status"] == "clean"
    # AND the message failed for its malformed record: after the queue's retries it
    # waits in the DLQ for an operator, and its redeliveries started nothing twice
    [dead] = harness.dlq_messages()
    assert dead["Body"] == body
    assert int(dead["Attributes"]["ApproximateReceiveCount"]) > 1
    executions = harness.client("stepfunctions").list_executions(
        stateMachineArn=harness.state_machine_arn
    )["executions"]
    assert [e["name"] for e in executions].count(report.name) == 1


def test_a_key_ending_in_a_slash_with_content_and_no_size_is_scanned(harness):
    # GIVEN EICAR under a key that looks like a folder, sent without its size
    # (a rescan's listing, a hand-written event)
    version = harness.upload("looks-like-a-folder/", samples.EICAR)["VersionId"]
    _drop_notifications(harness)
    obj = {"bucket": "uploads", "key": "looks-like-a-folder/", "versionId": version}

    [report] = harness.wait([harness.start({"object": obj, "trigger": {}})])

    # THEN it is read and found, not skipped as a folder marker
    assert report.output["scan"]["verdict"] == "infected"
    assert report.output["action"]["action"] == "quarantined"


def test_an_object_that_kills_clamd_is_unscannable_after_two_crashes(harness, monkeypatch):
    from functions.scan_object import engine as engine_module
    from functions.scan_object.app import get_scanner as scanner

    # GIVEN a clamd that dies whenever it reads a certain object (a parser crash)
    original = engine_module.ClamdEngine.scan_file

    def dies_on_poison(self, path, repair=True):
        if b"POISON-PILL" in Path(path).read_bytes()[:4096]:
            self.process.kill()
            self.process.wait()
        return original(self, path, repair)

    monkeypatch.setattr(engine_module.ClamdEngine, "scan_file", dies_on_poison)
    assert harness.scan("warm.txt", b"warm up").status == "SUCCEEDED"
    starts = scanner().engine.starts

    report = harness.scan("poison.bin", b"POISON-PILL " * 10)

    # THEN after two crashes it is unscannable (never clean), with one restart
    # between them rather than one per retry, and the run succeeds
    assert report.status == "SUCCEEDED"
    scan = report.output["scan"]
    assert (scan["verdict"], scan["reason"]) == ("unscannable", "engine-crash")
    assert scanner().engine.starts - starts == 1
    tags = harness.tags("poison.bin", version_id=report.input["object"]["versionId"])
    assert (tags["scan-status"], tags["scan-reason"]) == ("unscannable", "engine-crash")
    # AND the next object is scanned on a fresh clamd as usual
    assert harness.scan("after.txt", b"fine").output["scan"]["verdict"] == "clean"
