"""The scan workflow end to end: real ClamAV, the real ASL, the real handlers.

Each test uploads to the emulated source bucket, lets S3 notify the queue,
drains the queue through start_scan and follows the execution to its end.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from functions.shared.errors import AuditWriteFailed, ScanEngineUnavailable
from scanctl import samples
from tests.conftest import WEBHOOK_SECRET

CLEAN_PATH = [
    "Fetch Definitions",
    "Scan Object",
    "Which Verdict?",
    "Tag As Clean",
    "Record Audit",
    "Notify Webhook",
]


def test_clean_file_is_tagged_audited_and_announced(make_harness, webhook):
    # GIVEN a source bucket with a webhook configured, and an object with tags of its own
    webhook.secret = WEBHOOK_SECRET
    harness = make_harness(webhook_url=webhook.url, webhook_secret=WEBHOOK_SECRET)

    # WHEN a clean file is uploaded
    report = harness.scan("reports/q3 summary.txt", b"all good\n", tags={"team": "finance"})

    # THEN the execution succeeded along the clean path
    assert report.status == "SUCCEEDED"
    assert report.states == CLEAN_PATH
    # AND the exact version carries the scan tags next to its own
    version = report.output["object"]["versionId"]
    assert version
    tags = harness.tags("reports/q3 summary.txt", version_id=version)
    assert tags["team"] == "finance"
    assert tags["scan-status"] == "clean"
    assert tags["scan-engine"].startswith("ClamAV 1.")
    assert tags["scan-engine"].endswith("/" + report.output["definitions"]["version"])
    # AND one audit item records the verdict
    [item] = harness.audit_items("reports/q3 summary.txt")
    assert item["verdict"] == "clean"
    assert item["versionId"] == version
    assert item["executionArn"] == report.arn
    assert item["definitionsVersion"] == report.output["definitions"]["version"]
    # AND the webhook received the result, signed as Standard Webhooks says:
    # the receiver's standardwebhooks library accepted it
    [request] = webhook.requests
    assert request["verified"] == "ok"
    body = json.loads(request["body"])
    assert body["event"] == "scan.completed"
    assert body["verdict"] == "clean"
    assert body["object"]["key"] == "reports/q3 summary.txt"
    assert body["executionArn"] == report.arn


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("eicar.com", samples.EICAR),
        ("eicar.zip", samples.zipped("eicar.com", samples.EICAR)),
        ("nested.zip", samples.zipped("inner.zip", samples.zipped("eicar.com", samples.EICAR))),
    ],
)
def test_eicar_is_quarantined_and_the_original_version_is_gone(harness, name, content):
    # WHEN the EICAR test string is uploaded (plain, zipped, nested)
    report = harness.scan(
        f"incoming/{name}",
        content,
        ContentType="application/x-test",
        Metadata={"uploader": "alice"},
    )

    # THEN it went through quarantine
    assert report.status == "SUCCEEDED"
    assert "Quarantine Or Delete" in report.states
    assert report.output["scan"]["verdict"] == "infected"
    assert report.output["scan"]["signatures"][0].startswith(samples.EICAR_SIGNATURE)
    # AND the quarantine copy keeps content, metadata and content type, with our tags
    s3 = harness.client("s3")
    copy = s3.get_object(Bucket="quarantine", Key=f"incoming/{name}")
    assert copy["Body"].read() == content
    assert copy["ContentType"] == "application/x-test"
    assert copy["Metadata"] == {"uploader": "alice"}
    tags = harness.tags(f"incoming/{name}", bucket="quarantine")
    assert tags["scan-status"] == "infected"
    assert tags["scan-signature"].startswith(samples.EICAR_SIGNATURE)
    assert tags["scan-source-bucket"] == "uploads"
    # AND no version of the original is left readable
    versions = s3.list_object_versions(Bucket="uploads", Prefix=f"incoming/{name}")
    assert versions.get("Versions", []) == []
    [item] = harness.audit_items(f"incoming/{name}")
    assert item["action"] == "quarantined"
    assert item["quarantine"]["bucket"] == "quarantine"


def test_eicar_is_deleted_when_there_is_no_quarantine_bucket(make_harness):
    harness = make_harness(quarantine=False)

    report = harness.scan("eicar.com", samples.EICAR)

    assert report.status == "SUCCEEDED"
    assert report.output["action"]["action"] == "deleted"
    assert report.output["action"]["deletedVersionId"] == report.output["object"]["versionId"]
    versions = harness.client("s3").list_object_versions(Bucket="uploads", Prefix="eicar.com")
    # The version itself is gone: no delete marker hiding a readable version.
    assert versions.get("Versions", []) == []
    assert versions.get("DeleteMarkers", []) == []


def test_only_the_scanned_version_is_deleted(harness):
    # GIVEN a clean first version of a key
    first = harness.upload("doc.txt", b"first, clean")["VersionId"]
    harness.wait(harness.drain())
    # WHEN an infected second version is uploaded
    report = harness.scan("doc.txt", samples.EICAR)
    # THEN only the infected version is removed; the clean one is still there
    assert report.output["action"]["deletedVersionId"] != first
    versions = harness.client("s3").list_object_versions(Bucket="uploads", Prefix="doc.txt")
    assert [v["VersionId"] for v in versions["Versions"]] == [first]


def test_the_engine_stays_warm_across_executions(harness):
    # GIVEN one scan has started clamd
    from functions.scan_object import app as scan_app

    harness.scan("first.txt", b"one")
    engine = scan_app.get_scanner().engine
    pid, starts, reloads = engine.process.pid, engine.starts, engine.reloads

    # WHEN more objects are scanned, each in its own execution
    for i in range(5):
        assert harness.scan(f"next-{i}.txt", b"more").output["scan"]["verdict"] == "clean"

    # THEN the same clamd answered all of them: no restart, no reload
    assert engine.process.pid == pid
    assert engine.process.poll() is None
    assert (engine.starts, engine.reloads) == (starts, reloads)


def test_encrypted_zip_is_unscannable_not_clean(harness):
    report = harness.scan("secret.zip", samples.encrypted_zip("secret.txt", b"top secret"))

    assert report.status == "SUCCEEDED"
    assert "Tag As Unscannable" in report.states
    assert report.output["scan"]["verdict"] == "unscannable"
    assert report.output["scan"]["reason"] == "encrypted"
    tags = harness.tags("secret.zip", version_id=report.output["object"]["versionId"])
    assert tags["scan-status"] == "unscannable"
    assert tags["scan-reason"] == "encrypted"


def test_object_above_the_maximum_is_unscannable_without_download(make_harness):
    harness = make_harness(max_object_size_mb=1)
    downloads = []
    from functions.shared import aws

    def record(params, **_):
        downloads.append(params["Key"])

    s3 = aws.client("s3")  # the client the handlers use
    s3.meta.events.register("provide-client-params.s3.GetObject", record)
    try:
        report = harness.scan("big.bin", b"\0" * (1024 * 1024 + 1))
    finally:
        s3.meta.events.unregister("provide-client-params.s3.GetObject", record)

    assert report.output["scan"]["verdict"] == "unscannable"
    assert report.output["scan"]["reason"] == "too-large"
    assert "big.bin" not in downloads
    tags = harness.tags("big.bin", version_id=report.output["object"]["versionId"])
    assert tags["scan-reason"] == "too-large"


def test_object_deleted_before_its_scan_is_skipped(harness):
    version = harness.upload("gone.txt", b"short-lived")["VersionId"]
    harness.client("s3").delete_object(Bucket="uploads", Key="gone.txt", VersionId=version)

    [report] = harness.wait(harness.drain())

    assert report.status == "SUCCEEDED"
    assert report.output["scan"]["verdict"] == "skipped"
    assert report.output["scan"]["reason"] == "object-gone"
    assert "Record Audit" in report.states
    assert not any(s.startswith("Tag") for s in report.states)
    [item] = harness.audit_items("gone.txt")
    assert item["verdict"] == "skipped"


def test_empty_object_is_scanned(harness):
    report = harness.scan("empty.txt", b"")
    assert report.output["scan"]["verdict"] == "clean"
    assert report.output["scan"]["engine"]


def test_redelivered_message_starts_one_execution(harness):
    # GIVEN an upload whose notification is delivered twice
    harness.drain()  # S3's test event
    harness.upload("twice.txt", b"hello")
    sqs = harness.client("sqs")
    [message] = sqs.receive_message(QueueUrl=harness.queue_url, MaxNumberOfMessages=10)["Messages"]
    sqs.send_message(QueueUrl=harness.queue_url, MessageBody=message["Body"])
    sqs.change_message_visibility(
        QueueUrl=harness.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )
    # WHEN the queue is drained
    harness.wait(harness.drain())
    # THEN one execution ran (as Step Functions lists them, not as drain() names
    # them), and both messages were consumed
    executions = harness.client("stepfunctions").list_executions(
        stateMachineArn=harness.state_machine_arn
    )["executions"]
    assert len([e for e in executions if e["name"].startswith("twice_txt-")]) == 1
    assert len(harness.audit_items("twice.txt")) == 1
    assert sqs.receive_message(QueueUrl=harness.queue_url).get("Messages", []) == []


def test_s3_test_event_is_ignored(harness):
    # moto, like S3, sends s3:TestEvent when the notification is configured.
    names = harness.drain()
    assert names == []
    assert harness.dlq_messages() == []


def test_garbage_body_fails_alone_and_reaches_the_dlq(harness):
    sqs = harness.client("sqs")
    sqs.send_message(QueueUrl=harness.queue_url, MessageBody="this is not an S3 event")
    harness.upload("fine.txt", b"fine")

    names = harness.drain()

    [report] = harness.wait(names)
    assert report.output["object"]["key"] == "fine.txt"
    assert report.status == "SUCCEEDED"
    [dead] = harness.dlq_messages()
    assert dead["Body"] == "this is not an S3 event"


def test_scan_engine_failing_once_is_retried(harness, monkeypatch):
    # GIVEN clamd dies right before the next scan
    from functions.scan_object import app as scan_app
    from functions.scan_object.engine import ClamdEngine

    harness.scan("warmup.txt", b"warm the engine")
    engine = scan_app.get_scanner().engine
    starts = engine.starts
    original = ClamdEngine.scan_file
    calls = []

    def dying_scan(self, path, repair=True):
        calls.append(path)
        if len(calls) == 1:
            self.process.kill()
            self.process.wait()
        return original(self, path, repair)

    monkeypatch.setattr(ClamdEngine, "scan_file", dying_scan)

    # WHEN a file is scanned
    report = harness.scan("retry.txt", b"scan me")

    # THEN the first attempt failed with the named error, the retry restarted clamd
    assert report.status == "SUCCEEDED"
    assert report.output["scan"]["verdict"] == "clean"
    assert (
        report.count("TaskFailed", "Scan Object")
        + report.count("LambdaFunctionFailed", "Scan Object")
        == 1
    )
    assert engine.starts == starts + 1
    assert len(harness.retry_waits) >= 1


def test_a_clamd_that_lost_its_temporary_directory_still_finds_eicar(harness):
    # clamd 1.4 answers OK for every file, EICAR included, once its
    # TemporaryDirectory is gone (a /tmp clean-up, a second scanner in the container)
    import shutil

    from functions.scan_object import app as scan_app

    harness.scan("warmup.txt", b"warm the engine")
    shutil.rmtree(scan_app.get_scanner().engine.tmp_dir)

    report = harness.scan("eicar.com", samples.EICAR)

    assert report.output["scan"]["verdict"] == "infected"


def test_a_clamd_that_says_ok_to_everything_never_makes_anything_clean(harness, monkeypatch):
    # GIVEN a clamd that stopped detecting (it answers OK to every file)
    from functions.scan_object.engine import ClamdEngine

    harness.scan("warmup.txt", b"warm the engine")
    talk = ClamdEngine._command

    def says_ok(self, command, *args, **kwargs):
        # clamd's own reply to SCAN, as it gives it with its temp directory gone;
        # everything else (PING, VERSION, RELOAD) is the real clamd's answer.
        if command.startswith(b"zSCAN "):
            return command.removeprefix(b"zSCAN ").rstrip(b"\0").decode() + ": OK"
        return talk(self, command, *args, **kwargs)

    monkeypatch.setattr(ClamdEngine, "_command", says_ok)

    # WHEN an object is scanned
    report = harness.scan("looks-clean.txt", b"anything")

    # THEN no attempt calls it clean: the canary check fails each one, the
    # execution fails at Scan Object, and the object is marked error, not clean
    assert report.status == "FAILED"
    assert report.failed_state == "Scan Object"
    assert report.error == "ScanEngineUnavailable"
    assert harness.tags("looks-clean.txt")["scan-status"] == "error"


def test_webhook_500_twice_then_200_is_delivered_on_the_third_try(make_harness, webhook):
    webhook.answer(500, 500)
    harness = make_harness(webhook_url=webhook.url)

    report = harness.scan("hooked.txt", b"hello")

    assert report.status == "SUCCEEDED"
    assert [r["status"] for r in webhook.requests] == [500, 500, 200]
    failures = report.count("TaskFailed", "Notify Webhook") + report.count(
        "LambdaFunctionFailed", "Notify Webhook"
    )
    assert failures == 2
    assert report.output["notification"]["delivered"] is True
    # Every try carried the same message id, so the receiver can de-duplicate.
    assert len({r["headers"]["webhook-id"] for r in webhook.requests}) == 1


def test_webhook_404_is_not_retried_and_the_failure_is_recorded(make_harness, webhook):
    webhook.answer(404)
    harness = make_harness(webhook_url=webhook.url)

    report = harness.scan("hooked.txt", b"hello")

    # Decision: the execution fails (visible, redrivable) at Notify Webhook; the
    # audit item keeps the verdict, is marked failed, and says the delivery was
    # rejected; no scan.failed notice goes to the webhook that refused.
    assert [r["status"] for r in webhook.requests] == [404]
    assert report.status == "FAILED"
    assert report.error == "WebhookRejected"
    assert report.failed_state == "Notify Webhook"
    [item] = harness.audit_items("hooked.txt")
    assert item["verdict"] == "clean"
    assert item["failed"] is True
    assert item["failure"] == "failed"  # listed by the failures index
    assert item["failedState"] == "Notify Webhook"
    assert item["error"]["error"] == "WebhookRejected"
    assert item["error"]["cause"] == "webhook answered 404; not retried"
    # The object itself was still handled, and keeps its verdict's tag.
    assert harness.tags("hooked.txt")["scan-status"] == "clean"


def test_dynamodb_refusing_the_audit_fails_at_record_audit_and_is_recorded_later(harness):
    # GIVEN DynamoDB refuses Record Audit's write and all its retries
    from functions.shared import aws

    refused = []

    def throttle(**kwargs):
        if len(refused) < 6:
            refused.append(kwargs["params"]["TableName"])
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}},
                "PutItem",
            )

    ddb = aws.client("dynamodb")
    ddb.meta.events.register("provide-client-params.dynamodb.PutItem", throttle)
    try:
        report = harness.scan("audited.txt", b"hello")
    finally:
        ddb.meta.events.unregister("provide-client-params.dynamodb.PutItem", throttle)

    # THEN the execution failed at Record Audit, and the failure recorder (on
    # EventBridge's status change) got the item in once DynamoDB was back
    assert report.status == "FAILED"
    assert report.failed_state == "Record Audit"
    assert report.error == "AuditWriteFailed"
    assert len(refused) == 6
    [item] = harness.audit_items("audited.txt")
    assert item["verdict"] == "clean"
    assert item["failed"] is True
    assert item["error"]["error"] == "AuditWriteFailed"


def test_failure_with_no_audit_leaves_a_failed_execution_and_a_dead_letter(harness):
    # GIVEN the audit table is gone altogether
    harness.client("dynamodb").delete_table(TableName="scan-audit")

    report = harness.scan("unrecorded.txt", b"hello")

    # THEN nothing is silently lost: the execution is FAILED at Tag As Clean (the
    # version's infected hold cannot be read, so clean is not written: fail closed),
    # where it can be redriven, and the recorder's event waits in its DLQ
    assert report.status == "FAILED"
    assert report.failed_state == "Tag As Clean"
    assert "AuditWriteFailed" in report.error
    assert harness.tags("unrecorded.txt").get("scan-status") != "clean"
    [dead] = harness.client("sqs").receive_message(QueueUrl=harness.failure_dlq_url)["Messages"]
    assert json.loads(dead["Body"])["detail"]["executionArn"] == report.arn


def test_lambda_service_error_is_retried(harness):
    class ServiceException(Exception):
        pass

    ServiceException.__name__ = "Lambda.ServiceException"
    harness.fail_next("apply_verdict", ServiceException("Lambda hiccup"))

    report = harness.scan("hiccup.txt", b"hello")

    assert report.count("LambdaFunctionFailed", "Tag As Clean") == 1  # the fault did fire
    assert report.status == "SUCCEEDED"
    assert harness.tags("hiccup.txt")["scan-status"] == "clean"


def test_every_failure_is_recorded_or_redrivable(harness):
    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=10)

    report = harness.scan("down.txt", b"hello")

    assert report.status == "FAILED"
    assert report.error == "ScanEngineUnavailable"
    assert report.failed_state == "Scan Object"
    [item] = harness.audit_items("down.txt")
    assert item["verdict"] == "error"  # no verdict was reached
    assert item["failed"] is True
    assert item["error"]["error"] == "ScanEngineUnavailable"
    # Retried 6 times with growing waits (a burst is ridden out) before giving up.
    assert (
        report.count("LambdaFunctionFailed", "Scan Object")
        + report.count("TaskFailed", "Scan Object")
        == 7
    )
    # AND the object says it was not scanned
    tags = harness.tags("down.txt")
    assert tags["scan-status"] == "error"
    assert tags["scan-reason"] == "ScanEngineUnavailable"

    # AND it is redrivable: with the engine back, Redrive finishes the same execution
    redriven = harness.redrive(report.name)
    assert (redriven.status, redriven.arn) == ("SUCCEEDED", report.arn)
    assert harness.tags("down.txt")["scan-status"] == "clean"
    [item] = harness.audit_items("down.txt")
    assert (item["verdict"], item["failed"]) == ("clean", False)


# -- unversioned buckets, locked versions, S3's tag limit ---------------------------------------


def test_unversioned_bucket_clean_file_is_tagged(make_harness):
    harness = make_harness(versioned=False)
    report = harness.scan("plain.txt", b"hello")
    assert report.output["object"]["versionId"] is None
    assert report.output["object"]["sequencer"]
    assert harness.tags("plain.txt")["scan-status"] == "clean"


def test_unversioned_overwrite_before_the_scan_scans_the_newer_content(make_harness):
    # GIVEN an unversioned bucket where a clean file is overwritten by EICAR
    # before the first file's scan ran
    harness = make_harness(versioned=False)
    harness.drain()
    harness.upload("race.txt", b"harmless first upload")
    harness.upload("race.txt", samples.EICAR)

    reports = harness.wait(harness.drain())

    # THEN whichever execution runs first scans what the key holds now (S3 may
    # send only one event for racing writes: the first event's scan follows the
    # overwrite), catches EICAR and quarantines it; the other finds it gone, or
    # catches it too. No clean tag ever lands on EICAR.
    verdicts = sorted(r.output["scan"]["verdict"] for r in reports)
    assert verdicts in (["infected", "skipped"], ["infected", "infected"])
    first = next(
        r for r in reports if r.input["object"]["eTag"] != reports[1].input["object"]["eTag"]
    )
    if first.output["scan"]["verdict"] == "infected":
        assert first.output["scan"]["scannedETag"] == reports[1].input["object"]["eTag"]
    assert "quarantined" in {(r.output.get("action") or {}).get("action") for r in reports}
    s3 = harness.client("s3")
    with pytest.raises(ClientError):
        s3.head_object(Bucket="uploads", Key="race.txt")


def test_unversioned_infected_delete_is_conditional(make_harness):
    harness = make_harness(versioned=False, quarantine=False)
    report = harness.scan("bad.com", samples.EICAR)
    assert report.output["action"]["action"] == "deleted"
    with pytest.raises(ClientError):
        harness.client("s3").head_object(Bucket="uploads", Key="bad.com")


def test_locked_infected_version_is_tagged_even_though_it_cannot_be_deleted(make_harness):
    import datetime as dt

    # GIVEN a version under Object Lock (compliance mode)
    harness = make_harness(object_lock=True)
    harness.drain()
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    harness.upload(
        "locked.com", samples.EICAR, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until
    )

    [report] = harness.wait(harness.drain())

    # THEN the delete was refused: a failed, recorded run, stopped where it failed...
    assert report.status == "FAILED"
    assert report.error == "ObjectActionRefused"
    assert report.failed_state == "Quarantine Or Delete"
    [item] = harness.audit_items("locked.com")
    assert item["verdict"] == "infected"
    assert item["failed"] is True
    # ...but the version says what it is to every reader of its tags
    version = report.input["object"]["versionId"]
    assert harness.tags("locked.com", version_id=version)["scan-status"] == "infected"


def test_tag_limit_keeps_status_and_records_what_was_dropped(harness):
    own = {f"k{i}": f"v{i}" for i in range(10)}

    report = harness.scan("tagged.txt", b"hello", tags=own)

    tags = harness.tags("tagged.txt", version_id=report.output["object"]["versionId"])
    assert len(tags) == 10
    assert tags["scan-status"] == "clean"
    assert "k9" not in tags
    [item] = harness.audit_items("tagged.txt")
    assert item["tagsDropped"] == ["scan-engine", "scan-time", "k9"]


def test_a_retried_quarantine_recognises_its_own_copy_only(harness):
    from functions.apply_verdict.actions import VerdictApplier
    from functions.shared.contracts import ObjectRef, ScanResult

    # GIVEN an infected version quarantined once (copy made, version deleted)
    version = harness.upload("twice.com", samples.EICAR)["VersionId"]
    obj = ObjectRef("uploads", "twice.com", version_id=version)
    scan = ScanResult(verdict="infected", scanned_at="2026-11-27T12:00:00Z", signatures=["X"])
    applier = VerdictApplier(harness.client("s3"), "quarantine")
    assert applier.apply(obj, scan)["action"] == "quarantined"

    # WHEN the step runs again (its first answer was lost) THEN it knows the copy
    again = applier.apply(obj, scan)
    assert again["action"] == "quarantined"
    assert again["recovered"] is True

    # BUT another version whose key has an older copy in quarantine is not "recovered"
    other = ObjectRef("uploads", "twice.com", version_id="some-other-version")
    assert applier.apply(other, scan) == {"action": "none", "reason": "object-gone"}


def test_a_retried_quarantine_finds_its_copy_behind_a_later_one(harness):
    from functions.apply_verdict.actions import VerdictApplier
    from functions.shared.contracts import ObjectRef, ScanResult

    # GIVEN one infected version quarantined (its answer lost), then a later
    # infected upload of the same key quarantined too: its copy is the newest
    scan = ScanResult(verdict="infected", scanned_at="2026-11-27T12:00:00Z", signatures=["X"])
    applier = VerdictApplier(harness.client("s3"), "quarantine")
    first, later = (
        ObjectRef("uploads", "again.com", harness.upload("again.com", samples.EICAR)["VersionId"])
        for _ in range(2)
    )
    assert applier.apply(first, scan)["action"] == "quarantined"
    assert applier.apply(later, scan)["action"] == "quarantined"

    # WHEN the first one's step runs again THEN it finds its own copy, not the newest
    again = applier.apply(first, scan)
    assert (again["action"], again["recovered"]) == ("quarantined", True)
    assert again["deletedVersionId"] == first.version_id


def test_a_retried_delete_without_quarantine_is_recorded_as_done(harness):
    from functions.apply_verdict.actions import VerdictApplier
    from functions.shared.contracts import ObjectRef, ScanResult

    # GIVEN an infected version deleted (no quarantine bucket), the answer lost
    version = harness.upload("gone.com", samples.EICAR)["VersionId"]
    obj = ObjectRef("uploads", "gone.com", version_id=version)
    scan = ScanResult(verdict="infected", scanned_at="2026-11-27T12:00:00Z", signatures=["X"])
    applier = VerdictApplier(harness.client("s3"), None)
    assert applier.apply(obj, scan)["action"] == "deleted"

    # WHEN the step runs again THEN it says deleted, not "none, object-gone"
    again = applier.apply(obj, scan)
    assert (again["action"], again["recovered"]) == ("deleted", True)


def test_every_outcome_reaches_eventbridge_as_an_object_scan_result(harness):
    # GIVEN a rule on the default bus, as a user would write it, sending to a queue
    events, sqs = harness.client("events"), harness.client("sqs")
    inbox = sqs.create_queue(QueueName="results-inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(
        Name="scan-results",
        EventPattern=json.dumps(
            {"source": ["s3-virus-scanner"], "detail-type": ["Object Scan Result"]}
        ),
    )
    events.put_targets(Rule="scan-results", Targets=[{"Id": "inbox", "Arn": inbox_arn}])

    # WHEN a clean file, EICAR and a file whose audit write keeps failing are scanned
    clean = harness.scan("ok.txt", b"fine")
    infected = harness.scan("bad.com", samples.EICAR)
    harness.fail_next("record_audit", AuditWriteFailed("throttled"), times=6)
    failed = harness.scan("late.txt", b"audited by the recorder")

    # THEN each outcome arrived once, with what a rule filters on at the top level
    messages = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10)["Messages"]
    assert len(messages) == 3
    details = {}
    for message in messages:
        event = json.loads(message["Body"])
        assert event["detail-type"] == "Object Scan Result"
        details[event["detail"]["key"]] = event["detail"]
    assert set(details) == {"ok.txt", "bad.com", "late.txt"}
    assert details["ok.txt"]["verdict"] == "clean"
    assert details["ok.txt"]["executionArn"] == clean.arn
    assert details["ok.txt"]["versionId"] == clean.input["object"]["versionId"]
    assert details["bad.com"]["verdict"] == "infected"
    assert details["bad.com"]["action"] == "quarantined"
    assert details["bad.com"]["signatures"][0].startswith(samples.EICAR_SIGNATURE)
    assert details["bad.com"]["executionArn"] == infected.arn
    assert failed.status == "FAILED"
    assert details["late.txt"]["failed"] is True
    assert details["late.txt"]["failedState"] == "Record Audit"
    assert details["late.txt"]["error"]["error"] == "AuditWriteFailed"
