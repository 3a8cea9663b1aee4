"""scanctl through click's test runner: local scans, the demo, and operator commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from functions.shared.errors import ScanEngineUnavailable
from scanctl import samples
from scanctl.cli import main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def lines_of_json(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "upload"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "report.txt").write_text("quarterly numbers\n")
    (root / "eicar.com").write_bytes(samples.EICAR)
    (root / "nested.zip").write_bytes(
        samples.zipped("in.zip", samples.zipped("e.com", samples.EICAR))
    )
    return root


# -- scanctl local -----------------------------------------------------------------------------


def test_local_scans_a_tree_and_reports_json(runner, tree, signatures):
    result = runner.invoke(main, ["local", str(tree), "--json", "--definitions", str(signatures)])

    assert result.exit_code == 1, result.output  # something infected
    rows = {row["key"]: row for row in lines_of_json(result.stdout)}
    assert set(rows) == {"docs/report.txt", "eicar.com", "nested.zip"}
    assert rows["docs/report.txt"]["verdict"] == "clean"
    assert rows["docs/report.txt"]["action"] == "tagged"
    assert rows["eicar.com"]["verdict"] == "infected"
    assert rows["eicar.com"]["action"] == "quarantined"
    assert rows["nested.zip"]["signatures"][0].startswith(samples.EICAR_SIGNATURE)
    for row in rows.values():
        assert set(row) >= {
            "file", "key", "verdict", "action", "signatures", "definitions",
            "execution", "audited", "notification",
        }  # fmt: skip
        assert row["audited"] is True
        assert row["definitions"]["source"] == "cache"
        assert row["definitions"]["version"].startswith("custom-")
        assert row["execution"]["status"] == "SUCCEEDED"
        assert "Record Audit" in row["execution"]["states"]
    assert f"{signatures} (--definitions)" in result.stderr


def test_local_all_clean_exits_zero_with_a_table(runner, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")

    result = runner.invoke(main, ["local", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert "a.txt" in result.stdout
    assert "clean" in result.stdout
    assert "Tag As Clean" in result.stdout
    # Without --definitions and without freshclam's database, the output says so.
    assert "built-in TEST signatures" in result.stderr


def test_local_without_quarantine_deletes(runner, tmp_path):
    (tmp_path / "eicar.com").write_bytes(samples.EICAR)
    result = runner.invoke(main, ["local", str(tmp_path), "--json", "--no-quarantine"])
    [row] = lines_of_json(result.stdout)
    assert row["action"] == "deleted"
    assert result.exit_code == 1


def test_local_posts_to_a_webhook(runner, tmp_path, webhook):
    (tmp_path / "a.txt").write_text("a")
    result = runner.invoke(main, ["local", str(tmp_path), "--json", "--webhook", webhook.url])
    assert result.exit_code == 0, result.output
    [row] = lines_of_json(result.stdout)
    assert row["notification"]["delivered"] is True
    [request] = webhook.requests
    assert json.loads(request["body"])["object"]["key"] == "a.txt"


def test_local_definitions_directory_is_used(runner, tmp_path, eicar_only):
    (tmp_path / "clam.exe").write_bytes(samples.CLAM_EXE.read_bytes())
    result = runner.invoke(
        main, ["local", str(tmp_path), "--json", "--definitions", str(eicar_only)]
    )
    [row] = lines_of_json(result.stdout)
    assert row["verdict"] == "clean"  # set A has no signature for ClamAV's test file


def test_local_missing_path_is_an_error_row_and_exit_two(runner, tmp_path):
    result = runner.invoke(main, ["local", str(tmp_path / "nope"), "--json"])
    assert result.exit_code == 2
    [row] = lines_of_json(result.stdout)
    assert (row["file"], row["verdict"], row["error"]) == (
        str(tmp_path / "nope"),
        "error",
        "does not exist",
    )


def test_local_empty_directory_is_nothing_to_scan(runner, tmp_path):
    result = runner.invoke(main, ["local", str(tmp_path)])
    assert result.exit_code == 0
    assert "nothing to scan" in result.stderr


def test_local_bad_definitions_directory(runner, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    empty = tmp_path / "defs"
    empty.mkdir()
    result = runner.invoke(main, ["local", str(tmp_path / "a.txt"), "--definitions", str(empty)])
    assert result.exit_code == 2
    assert "holds no ClamAV database files" in result.stderr


def test_local_insecure_webhook_is_refused(runner, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    result = runner.invoke(main, ["local", str(tmp_path), "--webhook", "http://example.com/x"])
    assert result.exit_code == 2
    assert "--webhook must use https://" in result.stderr


def test_unreadable_file_is_an_error_for_that_file_only(runner, tree, monkeypatch):
    # The tests run as root, who can read anything: simulate EACCES for one file.
    locked = tree / "docs" / "report.txt"
    original = Path.read_bytes

    def read_bytes(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result = runner.invoke(main, ["local", str(tree), "--json"])

    rows = {row["key"]: row for row in lines_of_json(result.stdout)}
    assert rows["docs/report.txt"]["verdict"] == "error"
    assert "Permission denied" in rows["docs/report.txt"]["error"]
    assert rows["eicar.com"]["verdict"] == "infected"  # the others were scanned
    assert result.exit_code == 1  # something was found: that wins, as with clamscan


def test_unreadable_file_alone_exits_two(runner, tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    target.write_text("a")
    original = Path.read_bytes

    def read_bytes(self):
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    result = runner.invoke(main, ["local", str(target), "--json"])
    assert result.exit_code == 2
    assert lines_of_json(result.stdout)[0]["verdict"] == "error"


def test_many_small_files_are_all_scanned(runner, tmp_path):
    # More than one batch of executions (64), each file answered once.
    for i in range(70):
        (tmp_path / f"f{i:04d}.txt").write_text(f"file {i}\n")
    result = runner.invoke(main, ["local", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output[-2000:]
    rows = lines_of_json(result.stdout)
    assert len(rows) == 70
    assert {row["verdict"] for row in rows} == {"clean"}
    assert "70 files in" in result.stderr
    # No terminal here, so progress comes as lines.
    assert "scanned 70/70" in result.stderr


def test_a_ctrl_c_the_emulator_swallows_still_stops_the_run(tmp_path, signatures, monkeypatch):
    # moto's S3 notification code catches every exception: a Ctrl-C landing
    # there used to vanish, and the run scanned on to the end.
    from moto.sqs.models import SQSBackend

    from scanctl.local import choose_definitions, collect, request_stop, run_local

    for i in range(20):
        (tmp_path / f"f{i:02d}.txt").write_text(f"file {i}\n")
    send = SQSBackend.send_message

    def ctrl_c_inside_moto(self, queue_name, message_body, *args, **kwargs):
        if "f05.txt" in message_body:
            raise request_stop(130)  # what the signal handler raises, here swallowed
        return send(self, queue_name, message_body, *args, **kwargs)

    monkeypatch.setattr(SQSBackend, "send_message", ctrl_c_inside_moto)
    run = run_local(collect([tmp_path]), choose_definitions(signatures, tmp_path), quarantine=False)

    assert run.interrupted is not None
    assert run.interrupted.status == 130
    assert len(run.results) < 20


def test_demo_gets_every_verdict_it_was_made_for(runner):
    result = runner.invoke(main, ["demo", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["key"]: row["verdict"] for row in lines_of_json(result.stdout)}
    assert rows == {name: verdict for name, (_, verdict) in samples.demo_samples().items()}


# -- operator commands against the emulated deployment ---------------------------------------------


def aws_args(harness) -> list[str]:
    return ["--state-machine-arn", harness.state_machine_arn, "--table", "scan-audit"]


def test_rescan_scans_objects_that_predate_the_scanner(harness, runner):
    # GIVEN objects uploaded before the scanner existed (their events are gone)
    harness.drain()
    for name in ("old/a.txt", "old/b.txt", "other/c.txt"):
        harness.upload(name, b"old content")
    harness.client("sqs").purge_queue(QueueUrl=harness.queue_url)

    # WHEN a dry run lists them THEN nothing starts
    dry = runner.invoke(main, ["rescan", "s3://uploads/old/", "--dry-run", *aws_args(harness)])
    assert dry.exit_code == 0, dry.output
    assert len(dry.stdout.split()) == 2
    assert (
        harness.client("stepfunctions").list_executions(stateMachineArn=harness.state_machine_arn)[
            "executions"
        ]
        == []
    )

    # WHEN they are rescanned from here (the Rescan machine's runs: test_volume.py)
    result = runner.invoke(main, ["rescan", "s3://uploads/old/", "--local", *aws_args(harness)])
    assert result.exit_code == 0, result.output
    assert "2 executions started" in result.stderr
    names = [
        e["name"]
        for e in harness.client("stepfunctions").list_executions(
            stateMachineArn=harness.state_machine_arn
        )["executions"]
    ]
    reports = harness.wait(names)

    # THEN each got a rescan execution, distinct from event-driven names
    assert all(r.name.startswith("rescan-") for r in reports)
    assert {r.input["trigger"]["source"] for r in reports} == {"rescan"}
    assert harness.audit_items("old/a.txt")[0]["verdict"] == "clean"
    assert harness.audit_items("other/c.txt") == []

    # AND a dry run for what is still unscanned names only the newcomer
    harness.upload("old/new.txt", b"new content")
    harness.wait(harness.drain())
    harness.client("s3").delete_object_tagging(Bucket="uploads", Key="old/new.txt")
    harness.apply_access_gate()  # without it, scan-* tags are not trusted to be ours
    unscanned = runner.invoke(
        main,
        ["rescan", "--mode", "unscanned", "--dry-run", "s3://uploads/old/", *aws_args(harness)],
    )
    assert unscanned.exit_code == 0, unscanned.output
    assert unscanned.stdout.split() == ["old/new.txt"]
    assert "1 of 3 objects would be rescanned (mode unscanned; 2 up to date" in unscanned.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--mode", "outdated"], "--mode outdated needs --scanned-before or --definitions"),
        (["--scanned-before", "30d"], "go with --mode outdated"),
        (["--local", "--inventory", "s3://inv/manifest.json"], "--inventory is read by"),
        (["--rate", "0", "--local"], "--rate"),
    ],
)
def test_rescan_refuses_options_that_do_not_go_together(runner, args, says):
    result = runner.invoke(
        main, ["rescan", "s3://uploads/", *args, "--state-machine-arn", "a", "--table", "t"]
    )
    assert result.exit_code == 2, result.output
    assert says in result.stderr
    assert "Traceback" not in result.output


def test_rescan_bad_uri(runner):
    result = runner.invoke(
        main, ["rescan", "uploads/x", "--state-machine-arn", "a", "--table", "t"]
    )
    assert result.exit_code == 2
    assert "expected s3://bucket/key" in result.stderr


def test_redrive_resumes_failed_executions_in_place_once(harness, runner):
    # GIVEN an execution that failed (the engine was down through every retry)
    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)
    failed = harness.scan("flaky.txt", b"hello")
    assert failed.status == "FAILED"

    # WHEN a dry run looks THEN it says what it would do, and does nothing
    dry = runner.invoke(main, ["redrive", "--since", "1h", "--dry-run", *aws_args(harness)])
    assert dry.exit_code == 0, dry.output
    assert f"would be redriven {failed.name}" in dry.stdout
    assert harness.wait([failed.name])[0].redrive_count == 0

    # WHEN the operator redrives failures
    result = runner.invoke(main, ["redrive", "--since", "1h", *aws_args(harness)])

    # THEN the same execution resumed (RedriveExecution, as the console's button) and succeeded
    assert result.exit_code == 0, result.output
    assert f"redriven {failed.name}" in result.stdout
    [rerun] = harness.wait([failed.name])
    assert rerun.status == "SUCCEEDED"
    assert rerun.arn == failed.arn
    assert rerun.redrive_count == 1
    [item] = harness.audit_items("flaky.txt")  # one execution, one item
    assert item["verdict"] == "clean"
    assert item["redriveCount"] == 1

    # AND a second redrive does not run it again
    again = runner.invoke(main, ["redrive", "--since", "1h", *aws_args(harness)])
    assert "redriven" not in again.stdout
    assert "0 unsuccessful executions" in again.stderr


def test_redrive_as_new_starts_a_new_execution_with_the_same_input(harness, runner):
    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)
    failed = harness.scan("renewed.txt", b"hello")

    result = runner.invoke(main, ["redrive", "--since", "1h", "--as-new", *aws_args(harness)])

    assert result.exit_code == 0, result.output
    assert f"restarted {failed.name} as {failed.name}-r1" in result.stdout
    [rerun] = harness.wait([f"{failed.name}-r1"])
    assert rerun.status == "SUCCEEDED"
    assert rerun.input["object"] == failed.input["object"]
    assert rerun.input["trigger"]["retryOf"] == failed.name
    again = runner.invoke(main, ["redrive", "--since", "1h", "--as-new", *aws_args(harness)])
    assert "restarted" not in again.stdout
    assert "1 already re-run" in again.stderr


def test_executions_older_than_14_days_are_restarted_not_redriven(harness):
    import datetime as dt

    from scanctl.ops import redrive

    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)
    failed = harness.scan("old.txt", b"hello")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=15)

    summary = redrive(
        harness.client("stepfunctions"),
        harness.state_machine_arn,
        dt.timedelta(days=30),
        now=later,
    )

    assert summary.redriven == []
    assert summary.restarted == [(failed.name, f"{failed.name}-r1")]
    assert harness.wait([f"{failed.name}-r1"])[0].status == "SUCCEEDED"


def test_redrive_bad_since(runner):
    result = runner.invoke(
        main, ["redrive", "--since", "yesterday", "--state-machine-arn", "a", "--table", "t"]
    )
    assert result.exit_code == 2
    assert "--since" in result.stderr


def test_history_and_recent(harness, runner):
    harness.scan("hist.txt", b"first")
    harness.scan("hist.txt", samples.EICAR)

    result = runner.invoke(main, ["history", "s3://uploads/hist.txt", "--json", *aws_args(harness)])
    assert result.exit_code == 0, result.output
    rows = lines_of_json(result.stdout)
    assert [r["verdict"] for r in rows] == ["clean", "infected"]  # oldest first

    recent = runner.invoke(
        main, ["recent", "--verdict", "infected", "--since", "1h", "--json", *aws_args(harness)]
    )
    assert recent.exit_code == 0, recent.output
    assert [r["key"] for r in lines_of_json(recent.stdout)] == ["hist.txt"]

    assert all(isinstance(r["objectSize"], int) for r in rows)  # numbers, not strings

    # Not a terminal (a pipe, a file): a header and one tab-separated line per scan,
    # never wrapped, whatever the width.
    table = runner.invoke(main, ["history", "s3://uploads/hist.txt", *aws_args(harness)])
    header, *lines = table.stdout.splitlines()
    assert header.split("\t")[:4] == ["scan", "object", "version", "verdict"]
    assert [line.split("\t")[3] for line in lines] == ["clean", "infected"]
    assert all(line.split("\t")[1] == "s3://uploads/hist.txt" for line in lines)


def test_recent_failed_shows_the_error_and_hides_what_a_later_run_fixed(harness, runner):
    # GIVEN two failed scans; one object is later scanned again by a re-run as new
    harness.fail_next("scan_object", ScanEngineUnavailable("clamd is down"), times=14)
    broken = harness.scan("broken.txt", b"one")
    fixed = harness.scan("fixed.txt", b"two")
    assert (broken.status, fixed.status) == ("FAILED", "FAILED")
    rerun = runner.invoke(
        main, ["redrive", "--as-new", "--since", "1h", *aws_args(harness)], catch_exceptions=False
    )
    assert rerun.exit_code == 0, rerun.output
    assert [r.status for r in harness.wait([f"{broken.name}-r1", f"{fixed.name}-r1"])] == [
        "SUCCEEDED",
        "SUCCEEDED",
    ]

    failed = runner.invoke(main, ["recent", "--failed", "--since", "1h", *aws_args(harness)])
    everything = runner.invoke(
        main, ["recent", "--failed", "--all", "--since", "1h", *aws_args(harness)]
    )

    assert failed.exit_code == 0, failed.output
    header, *lines = failed.stdout.splitlines()
    assert header.split("\t") == [
        "scan", "object", "version", "failed state", "error", "verdict reached",
    ]  # fmt: skip
    assert lines == []  # both were fixed by their re-runs
    assert "2 handled by a later run hidden; --all shows them" in failed.stderr
    _, *all_lines = everything.stdout.splitlines()
    assert len(all_lines) == 2
    for line in all_lines:
        _, _, _, state, error, _ = line.split("\t")
        assert state == "Scan Object"
        assert error.startswith("ScanEngineUnavailable: clamd is down")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["recent", "--limit", "0"], "'--limit': 0 is not in the range"),
        (["recent", "--all"], "--all goes with --failed"),
        (["local", "serve", "--port", "70000"], "'--port': 70000"),
        (["local", "serve", "--for", "-1"], "'--for': -1.0"),
        (["rescan", "s3://uploads/", "--local", "--rate", "-1"], "'--rate': -1.0"),
    ],
)
def test_numeric_and_combined_options_are_checked(runner, args, says):
    result = runner.invoke(main, [*args, "--table", "t"] if args[0] == "recent" else args)
    assert result.exit_code == 2, result.output
    assert says in result.output
    assert "Traceback" not in result.output


def test_commands_find_the_deployment_by_stack_name(harness, runner):
    harness.scan("stacked.txt", b"x")
    template = {
        "Resources": {"Placeholder": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {
            "StateMachineArn": {"Value": harness.state_machine_arn},
            "AuditTableName": {"Value": "scan-audit"},
        },
    }
    harness.client("cloudformation").create_stack(
        StackName="S3VirusScanner-test", TemplateBody=json.dumps(template)
    )
    result = runner.invoke(
        main, ["history", "s3://uploads/stacked.txt", "--json", "--stack", "S3VirusScanner-test"]
    )
    assert result.exit_code == 0, result.output
    assert len(lines_of_json(result.stdout)) == 1

    missing = runner.invoke(main, ["history", "s3://uploads/stacked.txt", "--stack", "nope"])
    assert missing.exit_code == 2
    assert "stack 'nope' not found" in missing.stderr


def test_history_needs_a_key(runner):
    result = runner.invoke(
        main, ["history", "s3://uploads", "--state-machine-arn", "a", "--table", "t"]
    )
    assert result.exit_code == 2
    assert "with a key" in result.stderr


def test_redrive_as_new_handles_names_at_the_80_character_limit(harness, runner):
    # GIVEN a failed execution whose name uses all 80 characters
    key = "reports/" + "x" * 60 + ".txt"
    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)
    failed = harness.scan(key, b"hello")
    assert len(failed.name) == 80

    first = runner.invoke(main, ["redrive", "--since", "1h", "--as-new", *aws_args(harness)])
    assert first.exit_code == 0, first.output
    [line] = [x for x in first.stdout.splitlines() if x.startswith("restarted")]
    new_name = line.rsplit(" as ", 1)[1]
    assert len(new_name) <= 80
    assert new_name.endswith("-r1")
    [rerun] = harness.wait([new_name])
    assert rerun.status == "SUCCEEDED"

    # WHEN redrive runs again THEN the chain is recognised, nothing restarts, no crash
    again = runner.invoke(main, ["redrive", "--since", "1h", "--as-new", *aws_args(harness)])
    assert again.exit_code == 0, again.output
    assert "restarted" not in again.stdout


# -- scanctl policy -----------------------------------------------------------------------------

ROLE = "arn:aws:iam::123456789012:role/scanner-local"
ROLES = ["--reader-role", ROLE, "--tagging-role", ROLE]


def test_policy_prints_the_gate_as_json(runner):
    result = runner.invoke(main, ["policy", "s3://uploads", *ROLES])
    assert result.exit_code == 0, result.output
    statements = json.loads(result.stdout)
    assert [s["Sid"] for s in statements] == [
        "S3VirusScannerReadOnlyWhenClean",
        "S3VirusScannerNoScanTagsFromOthers",
        "S3VirusScannerOnlyTheScannerTags",
        "S3VirusScannerNoCopiesFromElsewhere",
    ]
    assert statements[0]["Resource"] == "arn:aws:s3:::uploads/*"


def test_policy_apply_merges_by_sid_and_is_idempotent(harness, runner):
    # GIVEN a bucket whose policy has a statement of its own
    s3 = harness.client("s3")
    own = {
        "Sid": "KeepMe",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:DeleteBucket",
        "Resource": "arn:aws:s3:::uploads",
    }
    s3.put_bucket_policy(
        Bucket="uploads", Policy=json.dumps({"Version": "2012-10-17", "Statement": [own]})
    )
    args = ["policy", "s3://uploads", "--apply", *ROLES, "--unscanned-reader", ROLE]

    # WHEN a dry run shows the change THEN nothing is written
    dry = runner.invoke(main, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert '+      "Sid": "S3VirusScannerReadOnlyWhenClean"' in dry.stdout
    assert len(json.loads(s3.get_bucket_policy(Bucket="uploads")["Policy"])["Statement"]) == 1

    # WHEN it is applied THEN the gate is added and the bucket's own statement kept
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    statements = json.loads(s3.get_bucket_policy(Bucket="uploads")["Policy"])["Statement"]
    assert [s["Sid"] for s in statements] == [
        "KeepMe",
        "S3VirusScannerReadOnlyWhenClean",
        "S3VirusScannerNoScanTagsFromOthers",
        "S3VirusScannerOnlyTheScannerTags",
        "S3VirusScannerNoCopiesFromElsewhere",
    ]

    # AND a second run changes nothing
    second = runner.invoke(main, args)
    assert second.exit_code == 0
    assert "nothing changed" in second.stderr
    assert second.stdout == ""


def test_policy_without_roles_or_stack_is_one_clear_line(runner):
    result = runner.invoke(
        main, ["policy", "s3://uploads", "--stack", "nope", "--endpoint-url", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_redrive_in_place_leaves_an_object_an_as_new_rerun_already_fixed(harness, runner):
    harness.fail_next("scan_object", ScanEngineUnavailable("down"), times=7)
    failed = harness.scan("chained.txt", b"hello")
    first = runner.invoke(main, ["redrive", "--since", "1h", "--as-new", *aws_args(harness)])
    assert first.exit_code == 0, first.output
    assert harness.wait([f"{failed.name}-r1"])[0].status == "SUCCEEDED"

    again = runner.invoke(main, ["redrive", "--since", "1h", *aws_args(harness)])

    assert "redriven" not in again.stdout
    assert "1 already re-run" in again.stderr
    assert harness.wait([failed.name])[0].redrive_count == 0


# -- release ------------------------------------------------------------------------------------


def test_release_lifts_the_hold_records_announces_and_scans_again(
    make_harness, runner, aws_faults, webhook, tmp_path
):
    # GIVEN a version found infected and kept (S3 refused its delete), held infected
    harness = make_harness(webhook_url=webhook.url)
    source = harness.options.source_bucket
    refused = aws_faults.fail("s3", "DeleteObject", "AccessDenied", times=1, Bucket=source)
    first = harness.scan("fp.bin", samples.EICAR)
    assert (first.status, len(refused)) == ("FAILED", 1)
    version = first.input["object"]["versionId"]
    # ...and definitions since fixed, which no longer call it infected (a false positive)
    (tmp_path / "fixed").mkdir()
    (tmp_path / "fixed" / "other.ndb").write_text("Other.Only:0:*:" + b"unused".hex() + "\n")
    harness.publish_definitions(tmp_path / "fixed")
    args = [*aws_args(harness), "--notify-function", "notify-webhook"]

    # WHEN an operator releases it without naming the version, or without a reason
    unnamed = runner.invoke(main, ["release", "s3://uploads/fp.bin", "--reason", "x", *args])
    no_reason = runner.invoke(main, ["release", "s3://uploads/fp.bin", "--version-id", version])
    # THEN each is one clear line and exit 2
    assert unnamed.exit_code == 2
    assert "--version-id" in unnamed.stderr
    assert no_reason.exit_code == 2
    assert "--reason" in no_reason.output

    # WHEN the operator releases it, saying why
    result = runner.invoke(
        main,
        ["release", "s3://uploads/fp.bin", "--version-id", version,
         "--reason", "vendor false positive FP-123", *args],
    )  # fmt: skip

    # THEN it is released, recorded, announced, and scanned again (clean now)
    assert result.exit_code == 0, result.output
    assert "webhook notified" in result.stderr
    rescan = result.stderr.rsplit("scanning again as ", 1)[1].strip()
    [again] = harness.wait([rescan])
    assert again.status == "SUCCEEDED"
    assert again.output["action"]["action"] == "tagged"
    assert harness.tags("fp.bin", version_id=version)["scan-status"] == "clean"
    items = harness.audit_items("fp.bin")
    assert [i["verdict"] for i in items] == ["infected", "released", "clean"]
    released = items[1]
    assert released["reason"] == "vendor false positive FP-123"
    assert released["held"]["signature"].startswith(samples.EICAR_SIGNATURE)
    assert released["versionId"] == version
    notices = [json.loads(r["body"]) for r in webhook.requests]
    [notice] = [n for n in notices if n["event"] == "object.released"]
    assert (notice["key"], notice["versionId"]) == ("fp.bin", version)
    assert notice["reason"] == "vendor false positive FP-123"

    # AND releasing it again is one clear line: there is nothing held
    twice = runner.invoke(
        main,
        ["release", "s3://uploads/fp.bin", "--version-id", version, "--reason", "again", *args],
    )
    assert twice.exit_code == 2
    assert "nothing to release" in twice.stderr
