"""At volume: Express beside Standard, rescans by Step Functions, the retro-scan.

The real ASL variants in moto; the Rescan machine's Distributed Map emulated
(scanctl/harness/rescan.py); real clamd.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from functions.shared.errors import ScanEngineUnavailable
from scanctl import samples
from scanctl.harness.invoker import Stall


@pytest.fixture
def express(make_harness):
    return make_harness(workflow_type="EXPRESS", express_max_object_mb=1)


def test_small_objects_run_on_express_and_large_ones_on_standard(express):
    small = express.scan("small.txt", b"hello")
    large = express.scan("large.bin", b"\0" * (1024 * 1024 + 1))

    assert ":stateMachine:" not in small.arn
    assert ":express-scan:" in small.arn
    assert small.status == "SUCCEEDED"
    assert small.output["scan"]["verdict"] == "clean"
    assert ":express-scan:" not in large.arn
    assert large.status == "SUCCEEDED"
    assert express.audit_items("small.txt")[0]["executionArn"] == small.arn


def test_an_express_failure_is_recorded_by_the_execution_itself(express):
    express.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)

    report = express.scan("broken.com", samples.EICAR, tags={"scan-status": "clean"})

    # Express keeps no history and emits no status change: its own Record Failure did it
    assert report.status == "FAILED"
    assert report.states[-2:] == ["Record Failure", "Scan Failed"]
    [item] = express.audit_items("broken.com")
    assert (item["failed"], item["failedState"], item["workflow"]) == (
        True,
        "Scan Object",
        "EXPRESS",
    )
    assert express.tags("broken.com")["scan-status"] == "error"


def test_an_express_scan_that_times_out_runs_again_on_standard(make_harness):
    # Scan Object's TimeoutSeconds sits below Express's 5-minute limit so a slow
    # scan fails as States.Timeout inside the execution: caught, recorded, re-run.
    express = make_harness(
        workflow_type="EXPRESS", express_max_object_mb=1, express_scan_timeout_s=1
    )
    express.fail_next("scan_object", Stall(3))

    report = express.scan("slow.com", samples.EICAR)

    [item] = [i for i in express.audit_items("slow.com") if i["workflow"] == "EXPRESS"]
    assert item["error"]["error"] == "States.Timeout"
    assert item["rerunOn"].endswith(f":scan-object:{report.name}")
    [rerun] = express.wait([report.name])  # same name, on the Standard machine
    standard = express.client("stepfunctions").describe_execution(executionArn=item["rerunOn"])
    assert standard["status"] == "SUCCEEDED"
    assert rerun.arn == item["rerunOn"]


def test_a_transient_express_failure_runs_again_on_standard_by_itself(express):
    # Express gives up early (its 5 minutes): the Standard machine has the full retries.
    express.fail_next("scan_object", ScanEngineUnavailable("down"), times=3)

    failed = express.scan("flaky.txt", b"hello")

    assert failed.status == "FAILED"
    [item] = [i for i in express.audit_items("flaky.txt") if i["workflow"] == "EXPRESS"]
    assert item["rerunOn"].endswith(f":scan-object:{failed.name}")
    [rerun] = express.wait([failed.name])
    assert rerun.status == "SUCCEEDED"  # two more failures, retried there
    assert express.tags("flaky.txt")["scan-status"] == "clean"


def test_scanctl_redrive_reruns_express_failures_from_the_audit_table(express):
    # A failure no automatic re-run would fix (S3 refused the tag: a bucket policy)
    # waits for the operator, who fixes the cause and runs `scanctl redrive`.
    from click.testing import CliRunner

    from functions.shared.errors import ObjectActionRefused
    from scanctl.cli import main

    express.fail_next("apply_verdict", ObjectActionRefused("AccessDenied by a policy"))
    failed = express.scan("again.txt", b"hello")
    assert failed.status == "FAILED"
    redrive = [
        *("redrive", "--since", "1h", "--table", "scan-audit"),
        *("--state-machine-arn", express.state_machine_arn),
    ]

    first = CliRunner().invoke(main, redrive)

    assert first.exit_code == 0, first.output
    assert f"restarted {failed.name} as " in first.stdout
    [rerun] = express.wait([failed.name])  # the same name, on the Standard machine
    assert ":scan-object:" in rerun.arn
    assert rerun.status == "SUCCEEDED"
    assert express.tags("again.txt")["scan-status"] == "clean"
    again = CliRunner().invoke(main, redrive)
    assert again.exit_code == 0, again.output
    assert "restarted" not in again.stdout  # the name is taken: nothing runs twice


# -- rescans ---------------------------------------------------------------------------------


def seed(harness, keys: list[str]) -> None:
    """Objects that predate the scanner: their notifications are gone."""
    harness.drain()
    for key in keys:  # a key ending in "/" is the console's empty folder marker
        harness.upload(key, b"" if key.endswith("/") else b"old content " + key.encode())
    harness.client("sqs").purge_queue(QueueUrl=harness.queue_url)


def test_a_rescan_of_a_prefix_scans_exactly_its_objects_once(harness):
    seed(harness, ["old/a.txt", "old/b.txt", "old/sub/c.txt", "other/d.txt", "old/folder/"])

    run = harness.rescan("old/", mode="all", run_id="r1")
    reports = harness.wait(harness.drain())

    assert run["queued"] == 3
    assert run["skipped"] == {"folder-marker": 1}
    assert sorted(r.input["object"]["key"] for r in reports) == [
        "old/a.txt",
        "old/b.txt",
        "old/sub/c.txt",
    ]
    for report in reports:
        assert report.name.startswith("rescan-r1-")  # named apart from the upload's
        assert report.input["trigger"]["source"] == "rescan"
        # The listing carries no version id: the scan pinned the current one.
        assert report.output["scan"]["scannedVersionId"]
        assert report.status == "SUCCEEDED"
    assert harness.audit_items("other/d.txt") == []


def test_a_second_unscanned_rescan_starts_nothing(harness):
    seed(harness, ["old/a.txt", "old/b.txt"])
    harness.rescan("old/", mode="all", run_id="first")
    harness.wait(harness.drain())
    harness.apply_access_gate()  # so that the scan-* tags can only be ours

    run = harness.rescan("old/", mode="unscanned", run_id="second")

    assert run["queued"] == 0
    assert run["skipped"] == {"up-to-date": 2}
    assert harness.drain() == []


def test_without_the_access_gate_a_forged_clean_tag_does_not_skip_a_rescan(harness):
    # An upload whose event was lost, labelled clean by its uploader, and one we scanned.
    harness.scan("old/scanned.txt", b"hello")
    harness.upload(
        "old/forged.com",
        samples.EICAR,
        tags={"scan-status": "clean", "scan-time": "2026-11-01T00:00:00Z"},
    )
    harness.client("sqs").purge_queue(QueueUrl=harness.queue_url)  # its event was lost

    run = harness.rescan("old/", mode="unscanned", run_id="second")
    reports = harness.wait(harness.drain())

    # Anyone who may upload may write that tag: every object is scanned again.
    assert run["queued"] == 2
    assert {r.output["scan"]["verdict"] for r in reports} == {"clean", "infected"}
    assert harness.tags("old/scanned.txt")["scan-status"] == "clean"


def test_a_clean_tag_forged_before_the_gate_does_not_skip_a_rescan_after_it(harness):
    # GIVEN one object we scanned, and one an uploader labelled clean (with a
    # verdict's time and engine) whose event was lost, both before the gate
    harness.scan("old/scanned.txt", b"hello")
    harness.upload(
        "old/forged.com",
        samples.EICAR,
        tags={
            "scan-status": "clean",
            "scan-time": "2026-11-01T00:00:00.000Z",
            "scan-engine": "ClamAV 1.4.6/whatever",
        },
    )
    harness.client("sqs").purge_queue(QueueUrl=harness.queue_url)  # its event was lost
    harness.apply_access_gate()  # stops new forgeries, not this one

    # WHEN the onboarding rescan of what is unscanned runs
    run = harness.rescan("old/", mode="unscanned", run_id="after-gate")
    reports = harness.wait(harness.drain())

    # THEN the tag no scan of ours wrote counts for nothing: that object is scanned
    # (and quarantined); the one the audit table backs is skipped
    assert run["queued"] == 1
    assert run["skipped"] == {"up-to-date": 1}
    [report] = reports
    assert report.input["object"]["key"] == "old/forged.com"
    assert report.output["scan"]["verdict"] == "infected"
    assert report.output["action"]["action"] == "quarantined"


def test_an_outdated_rescan_picks_the_objects_scanned_with_other_definitions(
    make_harness, eicar_only, signatures
):
    harness = make_harness(publish=eicar_only)
    seed(harness, ["old/clam.exe"])
    harness.upload("old/clam.exe", samples.CLAM_EXE.read_bytes())
    harness.wait(harness.drain())  # clean, under set A
    version = harness.publish_definitions(signatures)["version"]
    harness.apply_access_gate()

    run = harness.rescan("old/", mode="outdated", definitions_version=version, run_id="defs")
    [report] = harness.wait(harness.drain())

    assert run["queued"] == 1
    assert report.output["scan"]["verdict"] == "infected"  # the new set knows it


# -- the retro-scan --------------------------------------------------------------------------


def test_the_retro_scan_picks_clean_objects_scanned_with_older_definitions_in_the_window(
    make_harness, eicar_only, signatures
):
    from functions.update_definitions.retroscan import retroscan

    harness = make_harness(publish=eicar_only)
    harness.scan("recent/clam.exe", samples.CLAM_EXE.read_bytes())  # clean under set A
    harness.scan("recent/eicar.com", samples.EICAR)  # infected: quarantined, not rescanned
    version = harness.publish_definitions(signatures)["version"]
    harness.scan("fresh.txt", b"scanned with the new set already")

    def retro(**when):
        # The updater's own clients and role, as its handler calls it after a publish.
        from functions.shared.aws import client

        with harness.acting_as("update_definitions"):
            return retroscan(
                client("dynamodb"),
                client("sqs"),
                table="scan-audit",
                queue_url=harness.queue_url,
                source_bucket="uploads",
                version=version,
                hours=1,
                **when,
            )

    queued = retro()
    # Two hours on, the same scans are out of the one-hour window.
    later = retro(now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2))
    reports = harness.wait(harness.drain())

    assert queued["queued"] == 1
    assert later["queued"] == 0
    [report] = reports
    assert report.input["object"]["key"] == "recent/clam.exe"
    assert report.name.startswith(f"rescan-{queued['runId']}-")
    assert report.output["scan"]["verdict"] == "infected"


def test_a_rescan_row_without_an_etag_pins_the_content_its_head_saw(make_harness):
    # An unversioned bucket, and an inventory row without an ETag column: nothing
    # names the content, so the scan pins what its HEAD saw, and every later step
    # (tagging, quarantine) acts on that content only.
    import hashlib

    from functions.shared.clock import utc_now_iso
    from functions.shared.contracts import ObjectRef
    from functions.shared.s3event import rescan_message

    harness = make_harness(versioned=False)
    seed(harness, ["plain.txt"])
    body = b"old content plain.txt"
    harness.client("sqs").send_message(
        QueueUrl=harness.queue_url,
        MessageBody=rescan_message(ObjectRef("uploads", "plain.txt"), "inv1", utc_now_iso()),
    )

    [report] = harness.wait(harness.drain())

    assert report.status == "SUCCEEDED"
    assert report.output["scan"]["scannedETag"] == hashlib.md5(body).hexdigest()  # noqa: S324
    assert harness.tags("plain.txt")["scan-status"] == "clean"


def test_an_express_failure_the_recorder_cannot_record_lands_in_its_dead_letter_queue(express):
    express.fail_next("apply_verdict", RuntimeError("boom"), times=2)
    express.fail_next("record_failure", RuntimeError("the recorder is broken"), times=2)

    failed = express.scan("lost.txt", b"hello")

    assert failed.status == "FAILED"
    assert failed.states[-2:] == ["Keep The Failure", "Scan Failed"]
    sqs = express.client("sqs")
    [message] = sqs.receive_message(QueueUrl=express.deployment.failure_dlq_url)["Messages"]
    kept = json.loads(message["Body"])
    assert kept["state"]["object"]["key"] == "lost.txt"
    assert kept["state"]["error"]["Error"] == "RuntimeError"
    assert "the recorder is broken" in kept["state"]["recordError"]["Cause"]
    assert kept["execution"]["name"] == failed.name
    assert express.audit_items("lost.txt") == []

    # Once the recorder works again, the operator replays the queue: the kept message
    # records the failure as it would have, and leaves the queue.
    from click.testing import CliRunner

    from scanctl.cli import main

    sqs.change_message_visibility(
        QueueUrl=express.deployment.failure_dlq_url,
        ReceiptHandle=message["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    replay = [
        *("replay-failures", "--queue-url", express.deployment.failure_dlq_url),
        *("--function", "record-failure"),
    ]
    dry = CliRunner().invoke(main, [*replay, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "1 would be recorded and removed, 0 kept" in dry.stderr
    assert express.audit_items("lost.txt") == []
    # (a replay while the recorder still fails keeps the message, and says why)
    early = CliRunner().invoke(main, replay)
    assert early.exit_code == 1
    assert "the recorder is broken" in early.stdout
    assert "0 recorded and removed, 1 kept" in early.stderr

    result = CliRunner().invoke(main, replay)
    assert result.exit_code == 0, result.output
    assert "1 recorded and removed, 0 kept" in result.stderr
    # (the recorder also starts the Standard re-run, whose own item may land too)
    [item] = [i for i in express.audit_items("lost.txt") if i["workflow"] == "EXPRESS"]
    assert (item["failed"], item["failedState"], item["workflow"]) == (
        True,
        "Tag As Clean",
        "EXPRESS",
    )
    attributes = sqs.get_queue_attributes(
        QueueUrl=express.deployment.failure_dlq_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attributes == {
        "ApproximateNumberOfMessages": "0",
        "ApproximateNumberOfMessagesNotVisible": "0",
    }


def test_an_express_run_that_fails_after_its_quarantine_is_not_scanned_again(make_harness, webhook):
    # GIVEN an Express run whose webhook is down after it quarantined EICAR
    express = make_harness(
        workflow_type="EXPRESS", express_max_object_mb=1, webhook_url=webhook.url
    )
    webhook.answer(503, 503)  # Express's one try and one retry

    report = express.scan("late.com", samples.EICAR)

    # THEN the failure is recorded with the verdict it applied, and no Standard
    # re-run scans again (it would find the version gone and announce it skipped)
    assert report.status == "FAILED"
    [item] = express.audit_items("late.com")
    assert (item["workflow"], item["verdict"], item["failedState"]) == (
        "EXPRESS",
        "infected",
        "Notify Webhook",
    )
    assert "rerunOn" not in item  # none started
    notices = [json.loads(r["body"]) for r in webhook.requests]
    assert {n["verdict"] for n in notices} == {"infected"}, notices
    # AND the recorder's own notice, the last chance, reached the webhook once it was up
    [delivered] = [json.loads(r["body"]) for r in webhook.requests if r["status"] == 200]
    assert (delivered["event"], delivered["verdict"]) == ("scan.failed", "infected")

    # AND an operator's `scanctl redrive` says why it starts nothing either
    from click.testing import CliRunner

    from scanctl.cli import main

    redrive = CliRunner().invoke(
        main,
        [
            *("redrive", "--since", "1h", "--table", "scan-audit"),
            *("--state-machine-arn", express.state_machine_arn),
        ],
    )
    assert redrive.exit_code == 0, redrive.output
    assert f"not redrivable {report.name}: quarantined before it failed at Notify Webhook" in (
        redrive.stdout
    )
    assert "restarted" not in redrive.stdout


def test_an_express_run_that_fails_after_tagging_runs_again_and_its_notice_arrives(
    make_harness, webhook
):
    # A clean object's webhook down on Express: the Standard re-run (harmless after a
    # tag) delivers the notice, with Standard's retries.
    express = make_harness(
        workflow_type="EXPRESS", express_max_object_mb=1, webhook_url=webhook.url
    )
    webhook.answer(503, 503)

    report = express.scan("fine.txt", b"hello")

    assert report.status == "FAILED"
    [item] = [i for i in express.audit_items("fine.txt") if i["workflow"] == "EXPRESS"]
    assert item["rerunOn"].endswith(f":scan-object:{report.name}")
    [rerun] = express.wait([report.name])
    assert rerun.status == "SUCCEEDED"
    delivered = [json.loads(r["body"]) for r in webhook.requests if r["status"] == 200]
    assert [n["verdict"] for n in delivered] == ["clean"]


def test_an_express_failure_neither_the_recorder_nor_its_queue_took_is_traced_and_reconciled(
    express,
):
    from functions.record_failure import app as recorder

    # GIVEN an Express run that fails, whose recorder fails, and whose recorder's
    # dead-letter queue is gone (its SendMessage fails too); the upload forged clean
    express.fail_next("apply_verdict", RuntimeError("boom"), times=2)
    express.fail_next("record_failure", RuntimeError("the recorder is broken"), times=2)
    sqs = express.client("sqs")
    sqs.delete_queue(QueueUrl=express.deployment.failure_dlq_url)

    failed = express.scan("unkept.txt", b"hello", tags={"scan-status": "clean"})

    # THEN the run ends with an error of its own, which the Express log keeps
    # (the UnkeptExpressFailures metric filter counts exactly these)
    assert failed.status == "FAILED"
    assert failed.states[-2:] == ["Keep The Failure", "Failure Not Kept"]
    assert failed.error == "FailureNotKept"
    logged = [
        json.loads(e["message"])
        for e in express.client("logs").filter_log_events(
            logGroupName=express.deployment.express_log_group, filterPattern='"ExecutionFailed"'
        )["events"]
    ]
    assert [(e["type"], e["details"]["error"], e["execution_arn"]) for e in logged] == [
        ("ExecutionFailed", "FailureNotKept", failed.arn)
    ]
    assert express.audit_items("unkept.txt") == []
    assert express.tags("unkept.txt")["scan-status"] == "clean"  # forged, for now

    # WHEN, the faults gone, the hourly reconciliation runs
    express.invoker.clear_faults()
    result = express.invoker.call(recorder, "record_failure", {"reconcile": {"hours": 1}})

    # THEN it found the failure in the log and recorded it as Record Failure would
    # have: the original error, the object marked, and a re-run on Standard
    assert result["express"]["caughtUp"] == [failed.name]
    [item] = [i for i in express.audit_items("unkept.txt") if i["executionName"] == failed.name]
    assert (item["failed"], item["workflow"]) == (True, "EXPRESS")
    assert item["error"]["error"] == "RuntimeError"
    assert item["failedState"] == "Tag As Clean"
    rerun = express.wait([failed.name])[0]
    assert ":stateMachine:scan-object" in harness_machine(rerun.arn)
    assert rerun.status == "SUCCEEDED"
    assert express.tags("unkept.txt")["scan-status"] == "clean"
    assert "scan-time" in express.tags("unkept.txt")  # ours now
    # AND a second run finds nothing more to do
    again = express.invoker.call(recorder, "record_failure", {"reconcile": {"hours": 1}})
    assert again["express"]["caughtUp"] == []


def harness_machine(execution_arn: str) -> str:
    """The state machine ARN an execution ARN belongs to."""
    return execution_arn.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0]


def test_a_burst_at_a_reserved_concurrency_of_one_waits_its_turn_and_all_is_scanned(make_harness):
    # GIVEN a scanner with a reserved concurrency of 1 (Lambda refuses what is
    # beyond it) and the state machine's retry waits slept at 1/300 of their length
    harness = make_harness(reserved_concurrency={"scan_object": 1}, retry_wait_scale=1 / 300)
    harness.drain()

    # WHEN 8 uploads arrive at once
    for i in range(8):
        harness.upload(f"burst/{i:02d}.txt", f"file {i}\n".encode())
    reports = harness.wait(harness.drain(), timeout_s=300)

    # THEN Lambda did throttle them, and every one was scanned all the same
    assert len(harness.invoker.throttled) > 0
    assert [r.status for r in reports] == ["SUCCEEDED"] * 8
    assert all(r.output["scan"]["verdict"] == "clean" for r in reports)
    throttles = sum(r.count("LambdaFunctionFailed", "Scan Object") for r in reports)
    assert throttles == len(harness.invoker.throttled)
