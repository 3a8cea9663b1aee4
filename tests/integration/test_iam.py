"""The IAM check (tests/iamcheck) on a real run, and proof that it can fail.

Every end-to-end test is checked when its harness closes (tests/conftest.py
``iam_checked``). Here one run covers the paths with the most calls (a clean
object, an infected one quarantined, a failed run recorded and its object
marked) and is checked against the template as `cdk synth` writes it, then
against copies with one grant taken away: the check must name the call.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from scanctl import samples
from scanctl.harness import HarnessOptions, LocalScanner
from tests import iamcheck, synth
from tests.conftest import serving_webhook


@pytest.fixture(scope="module")
def recorded(clamav_work: Path, signatures: Path, iam_templates: Any) -> tuple[Any, dict[str, Any]]:
    """A closed harness (its calls recorded) and the template its IAM check uses."""
    closed: list[Any] = []
    LocalScanner.watchers.append(closed.append)
    try:
        with serving_webhook() as webhook:
            _run(closed, clamav_work, signatures, webhook)
    finally:
        LocalScanner.watchers.remove(closed.append)
    [harness] = closed
    problems = iamcheck.check(
        harness, iam_templates["everything"].result()["template"], "everything"
    )
    assert problems == [], problems  # (the autouse check does not see a module's harness)
    variant = iamcheck.variant_for(harness.options)
    return harness, iam_templates[variant].result()["template"]


def _run(closed: list, clamav_work: Path, signatures: Path, webhook: Any) -> None:
    with LocalScanner(HarnessOptions(work_dir=clamav_work, webhook_url=webhook.url)) as harness:
        harness.publish_definitions(signatures)
        assert harness.scan("clean.txt", b"nothing to see").status == "SUCCEEDED"
        assert harness.scan("eicar.com", samples.EICAR).status == "SUCCEEDED"
        # The webhook refuses the next notice: the run fails at Notify Webhook and
        # the failure recorder reads its history, writes the item, marks the object.
        webhook.answer(404)
        failed = harness.scan("refused.txt", b"also clean")
        assert failed.status == "FAILED"
        # An object deleted before its scan: S3 answers 404 (skipped) only to a
        # reader that may list the bucket.
        version = harness.upload("gone.txt", b"here for a moment")["VersionId"]
        harness.client("s3").delete_object(
            Bucket=harness.options.source_bucket, Key="gone.txt", VersionId=version
        )
        [gone] = harness.wait(harness.drain())
        assert gone.output["scan"]["verdict"] == "skipped"


def test_every_call_of_a_full_run_is_allowed_by_the_synthesized_policies(recorded):
    harness, template = recorded
    principals = {str(call.principal) for call in harness.calls}
    # The run reached every principal of the scan path, the recorder included.
    assert {
        "function start_scan",
        "function fetch_definitions",
        "function scan_object",
        "function apply_verdict",
        "function record_audit",
        "function record_failure",
        "stateMachine scan-object",
    } <= principals
    assert iamcheck.check(harness, template, "everything") == []


def without(template: dict[str, Any], path_part: str, action: str) -> dict[str, Any]:
    """``template`` with ``action`` removed from the policies of the role at ``path_part``."""
    changed = copy.deepcopy(template)
    removed = 0
    for resource in changed["Resources"].values():
        path = resource.get("Metadata", {}).get("aws:cdk:path", "")
        if resource["Type"] != "AWS::IAM::Policy" or f"/{path_part}/" not in path:
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            actions = (
                statement["Action"]
                if isinstance(statement["Action"], list)
                else [statement["Action"]]
            )
            if action in actions:
                statement["Action"] = [a for a in actions if a != action] or ["none:None"]
                removed += 1
    assert removed, f"{action} is not granted under {path_part}"
    return changed


@pytest.mark.parametrize(
    ("role", "action", "named"),
    [
        ("Workflow/ApplyVerdict", "s3:DeleteObjectVersion", "function apply_verdict called s3:"),
        (
            "FailureRecording/RecordFailure",
            "states:GetExecutionHistory",
            "function record_failure called stepfunctions:GetExecutionHistory",
        ),
        (
            "Workflow/ScanObjectStateMachine",
            "lambda:InvokeFunction",
            "stateMachine scan-object called lambda:Invoke",
        ),
        # Lambda's SQS poller acts with the starter's role.
        ("Ingest/StartScan", "sqs:DeleteMessage", "function start_scan called sqs:DeleteMessage"),
        (
            "Ingest/StartScan",
            "sqs:GetQueueAttributes",
            "function start_scan called sqs:GetQueueAttributes",
        ),
        # A 404 for an object deleted before its scan needs s3:ListBucket (else 403).
        ("Workflow/ScanObject", "s3:ListBucket", "function scan_object called s3:HeadObject"),
    ],
)
def test_a_grant_taken_away_is_named_with_the_call_that_needed_it(recorded, role, action, named):
    harness, template = recorded
    problems = iamcheck.check(harness, without(template, role, action), "everything")
    assert problems, f"removing {action} from {role} went unnoticed"
    assert all(named in p and f": {action} on arn:aws:" in p for p in problems), problems
    assert all("closest: {" in p for p in problems)


def test_the_recorders_old_grant_would_have_been_caught(recorded):
    # The history grant once named "arn:...:execution" (jsii emptied Arn.format's
    # dict): no execution matches it, so recording any failure was AccessDenied.
    harness, template = recorded
    broken = copy.deepcopy(template)
    for resource in broken["Resources"].values():
        path = resource.get("Metadata", {}).get("aws:cdk:path", "")
        if resource["Type"] == "AWS::IAM::Policy" and "/FailureRecording/RecordFailure/" in path:
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                if "states:GetExecutionHistory" in json.dumps(statement["Action"]):
                    statement["Resource"] = {
                        "Fn::Join": [
                            "",
                            [
                                "arn:aws:states:",
                                {"Ref": "AWS::Region"},
                                ":",
                                {"Ref": "AWS::AccountId"},
                                ":execution",
                            ],
                        ]
                    }
    problems = iamcheck.check(harness, broken, "everything")
    assert any("record_failure called stepfunctions:GetExecutionHistory" in p for p in problems)
    assert any("record_failure called stepfunctions:DescribeExecution" in p for p in problems)


def test_a_grant_pinned_to_another_region_is_caught(recorded):
    # The CLI's default region leaking into a stack that names its own (the class
    # of bug that made npx cdk synth fail) must not pass because the harness
    # happens to run in that default region.
    harness, template = recorded
    assert synth.CLI_DEFAULT_REGION not in json.dumps(template)
    broken = json.loads(
        json.dumps(template).replace(
            f"arn:aws:states:{synth.REGION}:", f"arn:aws:states:{synth.CLI_DEFAULT_REGION}:"
        )
    )
    problems = iamcheck.check(harness, broken, "everything")
    assert any("record_failure called stepfunctions:GetExecutionHistory" in p for p in problems), (
        problems
    )


def test_the_access_gate_is_part_of_the_check(recorded):
    # GIVEN the gate's readers without the scanner's role (the bucket policy as
    # a hand-merged policy might leave it): the scanner may not read what it scans.
    harness, template = recorded
    broken = copy.deepcopy(template)
    [policy] = [
        r["Properties"]
        for r in broken["Resources"].values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == "acme-uploads"
    ]
    [read] = [s for s in policy["PolicyDocument"]["Statement"] if s["Sid"].endswith("WhenClean")]
    scanner_role = next(
        k
        for k, r in broken["Resources"].items()
        if r["Type"] == "AWS::IAM::Role"
        and "/Workflow/ScanObject/" in r["Metadata"]["aws:cdk:path"]
    )
    read["Condition"]["ArnNotLike"]["aws:PrincipalArn"] = [
        arn
        for arn in read["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
        if arn != {"Fn::GetAtt": [scanner_role, "Arn"]}
    ]
    problems = iamcheck.check(harness, broken, "everything")
    assert problems
    assert all("function scan_object called s3:" in p for p in problems), problems
    assert all("denied by its bucket policy" in p for p in problems)
