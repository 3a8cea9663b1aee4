"""Failures stop where they happened, are recorded from EventBridge, and Redrive resumes them.

The real ASL in moto, with RedriveExecution and the status-change events moto
lacks emulated as AWS behaves (scanctl/harness/redrive.py, status_events.py).
"""

from __future__ import annotations

import json

from functions.shared.errors import ScanEngineUnavailable
from scanctl import samples


def test_a_failed_quarantine_stops_there_and_a_redrive_finishes_it_without_rescanning(
    harness, aws_faults
):
    # GIVEN S3 refuses every copy into quarantine until the retries run out
    copies = aws_faults.fail("s3", "CopyObject", "SlowDown", times=6)

    report = harness.scan("bad.com", samples.EICAR)

    # THEN the execution is FAILED at Quarantine Or Delete, with the scan result kept
    assert report.status == "FAILED"
    assert report.failed_state == "Quarantine Or Delete"
    assert report.error == "ObjectStoreUnavailable"
    assert len(copies) == 6  # the first try and five retries
    version = report.input["object"]["versionId"]
    # AND the object says what it is
    assert harness.tags("bad.com", version_id=version)["scan-status"] == "infected"
    # AND the failure is recorded with the verdict it reached
    [item] = harness.audit_items("bad.com")
    assert (item["verdict"], item["failed"], item["failedState"]) == (
        "infected",
        True,
        "Quarantine Or Delete",
    )
    assert "tagged scan-status=infected" in item["error"]["cause"]

    # WHEN S3 is back and the operator presses Redrive
    aws_faults.clear()
    scans_before = harness.invocations.count("scan_object")
    redriven = harness.redrive(report.name)

    # THEN the same execution resumes at Quarantine Or Delete and succeeds
    assert redriven.arn == report.arn
    assert redriven.status == "SUCCEEDED"
    assert redriven.redrive_count == 1
    assert redriven.states[-3:] == ["Quarantine Or Delete", "Quarantine Or Delete", "Record Audit"]
    assert harness.invocations.count("scan_object") == scans_before  # not scanned again
    assert redriven.output["action"]["action"] == "quarantined"
    # AND the one audit item of this execution now tells the final outcome
    [item] = harness.audit_items("bad.com")
    assert item["action"] == "quarantined"
    assert item.get("failed") is False
    assert "failure" not in item  # no longer listed among failures
    assert item["redriveCount"] == 1
    versions = harness.client("s3").list_object_versions(Bucket="uploads", Prefix="bad.com")
    assert versions.get("Versions", []) == []


def test_redrive_is_refused_for_a_succeeded_execution(harness):
    import pytest
    from botocore.exceptions import ClientError

    report = harness.scan("fine.txt", b"fine")
    with pytest.raises(ClientError, match="ExecutionNotRedrivable"):
        harness.client("stepfunctions").redrive_execution(executionArn=report.arn)


def test_a_late_failure_notice_does_not_overwrite_a_redrives_success(harness):
    from functions.record_failure import app as recorder
    from scanctl.harness.status_events import status_change_event

    # GIVEN an execution that failed, then was redriven to success
    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)
    failed = harness.scan("late.txt", b"hello")
    assert failed.status == "FAILED"
    assert harness.redrive(failed.name).status == "SUCCEEDED"

    # WHEN EventBridge delivers the first failure's notice again, late
    execution = _moto_execution(harness, failed.arn)
    event = status_change_event(execution)
    event["detail"].update(
        {"status": "FAILED", "redriveCount": 0, "error": "ScanEngineUnavailable", "cause": "down"}
    )
    result = harness.invoker.call(recorder, "record_failure", event)

    # THEN it is recognised as out of date, and the success stands
    assert "redrive 1 of this execution already ended" in result["ignored"]
    [item] = harness.audit_items("late.txt")
    assert item["verdict"] == "clean"
    assert item.get("failed") is False


def test_a_failure_notice_goes_to_the_webhook_once_with_its_own_id(make_harness, webhook):
    harness = make_harness(webhook_url=webhook.url)
    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)

    failed = harness.scan("noticed.txt", b"hello")

    [notice] = webhook.requests
    body = json.loads(notice["body"])
    assert body["event"] == "scan.failed"
    assert body["error"]["error"] == "ScanEngineUnavailable"
    assert body["executionArn"] == failed.arn
    # WHEN it is redriven to success THEN the completed notice has another id
    harness.redrive(failed.name)
    completed = webhook.requests[-1]
    assert json.loads(completed["body"])["event"] == "scan.completed"
    assert completed["headers"]["webhook-id"] != notice["headers"]["webhook-id"]


def _moto_execution(harness, arn):
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    from scanctl.harness.environment import ACCOUNT_ID, REGION

    return stepfunctions_parser_backends[ACCOUNT_ID][REGION].describe_execution(arn)


def test_a_stale_execution_redriven_late_never_lowers_a_newer_infected(
    make_harness, aws_faults, eicar_only, signatures
):
    import datetime as dt

    # GIVEN ClamAV's test file scanned with EICAR-only definitions (clean), whose
    # Tag As Clean failed for good
    harness = make_harness(publish=eicar_only, object_lock=True, quarantine=False)
    harness.drain()
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    tagging = aws_faults.fail("s3", "PutObjectTagging", "SlowDown", times=6)
    harness.upload(
        "locked.exe",
        samples.CLAM_EXE.read_bytes(),
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )
    [stale] = harness.wait(harness.drain())
    assert stale.failed_state == "Tag As Clean"
    assert len(tagging) == 6
    version = stale.input["object"]["versionId"]

    # AND a newer scan, with definitions that know the file, found it infected
    # (the version is locked, so it stays, tagged infected)
    harness.publish_definitions(signatures)
    newer = harness.wait([harness.start({"object": stale.input["object"], "trigger": {}})])[0]
    assert (newer.status, newer.error) == ("FAILED", "ObjectActionRefused")  # locked
    assert harness.tags("locked.exe", version_id=version)["scan-status"] == "infected"

    # WHEN the stale execution is redriven
    redriven = harness.redrive(stale.name)

    # THEN it does not lower the newer verdict: the version is held infected, so its
    # clean is applied as infected (a delete the lock refuses again: the run fails
    # at the step it resumed, saying why) and the tag stays infected
    assert (redriven.status, redriven.failed_state) == ("FAILED", "Tag As Clean")
    assert redriven.error == "ObjectActionRefused"
    assert harness.tags("locked.exe", version_id=version)["scan-status"] == "infected"
    [item] = [i for i in harness.audit_items("locked.exe") if i["executionName"] == stale.name]
    assert (item["verdict"], item["scanVerdict"]) == ("infected", "clean")
    assert "held infected" in item["error"]["cause"]


def test_a_marking_that_s3_refuses_is_retried_and_then_waits_in_the_dlq(harness, aws_faults):
    # GIVEN EICAR with a forged clean tag, a scan that fails, and S3 refusing
    # every tag write (so the recorder cannot replace the forged tag)
    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)
    aws_faults.fail("s3", "PutObjectTagging", "SlowDown")

    report = harness.scan("forged.com", samples.EICAR, tags={"scan-status": "clean"})

    # THEN the failure is recorded, but the recorder fails so Lambda retries it,
    # and the event waits in its DLQ (an alarm watches it)
    assert report.status == "FAILED"
    [item] = harness.audit_items("forged.com")
    assert item["objectMarking"]["markedAs"] is None
    assert harness.invocations.count("record_failure") == 3
    [dead] = harness.client("sqs").receive_message(QueueUrl=harness.failure_dlq_url)["Messages"]
    assert json.loads(dead["Body"])["detail"]["executionArn"] == report.arn


def test_a_failure_notice_eventbridge_never_delivered_is_caught_up_by_the_schedule(harness):
    from functions.record_failure import app as recorder

    # GIVEN a failed execution whose status change EventBridge lost (best effort)
    harness.status_changes.lose_next = 1
    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)
    failed = harness.scan("lost.com", samples.EICAR, tags={"scan-status": "clean"})
    assert failed.status == "FAILED"
    assert harness.audit_items("lost.com") == []
    assert harness.tags("lost.com")["scan-status"] == "clean"  # forged, for now

    # WHEN the scheduled reconciliation runs
    result = harness.invoker.call(recorder, "record_failure", {"reconcile": {"hours": 1}})

    # THEN it recorded and marked exactly that one
    assert result["caughtUp"] == [failed.name]
    [item] = harness.audit_items("lost.com")
    assert (item["failed"], item["failedState"]) == (True, "Scan Object")
    assert harness.tags("lost.com")["scan-status"] == "error"
    # AND a second run finds nothing to do
    again = harness.invoker.call(recorder, "record_failure", {"reconcile": {"hours": 1}})
    assert again["caughtUp"] == []


def test_the_reconciliation_records_every_lost_ending_even_when_one_cannot_be(harness, aws_faults):
    import pytest

    from functions.record_failure import app as recorder
    from functions.shared.errors import InvalidInput, ReconciliationIncomplete

    # GIVEN ten failed executions whose status changes EventBridge lost, and S3
    # refusing the marking of one of their objects
    harness.status_changes.lose_next = 10
    harness.fail_next("scan_object", InvalidInput("poison"), times=10)
    keys = [f"lost-{i}.txt" for i in range(10)]
    for key in keys:
        harness.upload(key, b"x", tags={"scan-status": "clean"})
    reports = harness.wait(harness.drain())
    assert [r.status for r in reports] == ["FAILED"] * 10
    assert all(harness.audit_items(key) == [] for key in keys)
    aws_faults.fail("s3", "PutObjectTagging", "AccessDenied", Key="lost-3.txt")

    # WHEN the scheduled reconciliation runs
    with pytest.raises(ReconciliationIncomplete) as failed:
        harness.invoker.call(recorder, "record_failure", {"reconcile": {"hours": 1}})

    # THEN the nine it could record are recorded and marked, and the run fails
    # naming the one it could not (Lambda retries it; the next run tries again)
    assert "9 endings caught up, 1 could not be recorded" in str(failed.value)
    assert "lost-3" in str(failed.value)
    for key in keys:
        if key == "lost-3.txt":
            continue
        [item] = harness.audit_items(key)
        assert (item["failed"], item["failedState"]) == (True, "Scan Object")
        assert harness.tags(key)["scan-status"] == "error"

    # AND once S3 takes the tag again, the next run records the last one
    aws_faults.clear()
    again = harness.invoker.call(recorder, "record_failure", {"reconcile": {"hours": 1}})
    assert [name for name in again["caughtUp"] if "lost-3" in name] == again["caughtUp"]
    assert len(again["caughtUp"]) == 1
    assert harness.tags("lost-3.txt")["scan-status"] == "error"
