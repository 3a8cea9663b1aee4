"""The ASL file itself: every path leads somewhere, every failure stops where it happened."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

import statemachines
from functions.shared import errors

ASL = json.loads(statemachines.definition_text())
STATES = ASL["States"]
TASKS = {name: s for name, s in STATES.items() if s["Type"] == "Task"}
LAMBDA_SERVICE_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}
# Catches that are decisions, not failure handling (state -> error -> target).
DECISIONS = {
    "Fetch Definitions": {"DefinitionsUnavailable": "Use Freshclam Instead"},
    "Scan Object": {
        "DefinitionsCorrupt": "Use Freshclam Instead",
        "CachedTarballMissing": "Use Freshclam Instead",
    },
}
VARIANTS = {
    "with webhook": statemachines.definition(webhook=True),
    "without webhook": statemachines.definition(webhook=False),
}


def targets(state: dict) -> list[str]:
    found = [state.get("Next"), state.get("Default")]
    found += [c["Next"] for c in state.get("Choices", [])]
    found += [c["Next"] for c in state.get("Catch", [])]
    return [t for t in found if t]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_target_exists(variant):
    asl = VARIANTS[variant]
    assert asl["StartAt"] in asl["States"]
    for name, state in asl["States"].items():
        for target in targets(state):
            assert target in asl["States"], f"{name} -> {target}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_state_is_reachable(variant):
    asl = VARIANTS[variant]
    seen, todo = set(), [asl["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(targets(asl["States"][name]))
    assert seen == set(asl["States"])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_only_terminal_states_end(variant):
    for name, state in VARIANTS[variant]["States"].items():
        if state["Type"] in ("Succeed", "Fail") or state.get("End"):
            continue
        assert targets(state), f"{name} goes nowhere"


def test_the_last_task_ends_the_execution_in_both_variants():
    # No Succeed state after the last Task, and no Choice on a deploy-time
    # setting: each would be one more billed transition per object.
    assert VARIANTS["with webhook"]["States"]["Notify Webhook"]["End"] is True
    assert VARIANTS["without webhook"]["States"]["Record Audit"]["End"] is True
    assert "Notify Webhook" not in VARIANTS["without webhook"]["States"]
    for asl in VARIANTS.values():
        assert not [s for s in asl["States"].values() if s["Type"] == "Succeed"]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_retries_and_catches_only_decisions(name):
    # A failure after the retries fails the execution at this Task, so the
    # console's Redrive resumes here; a Catch is only for a decision.
    task = TASKS[name]
    retried = {e for r in task["Retry"] for e in r["ErrorEquals"]}
    assert retried >= LAMBDA_SERVICE_ERRORS
    for retry in task["Retry"]:
        assert retry["BackoffRate"] >= 1.5
        assert retry["JitterStrategy"] == "FULL"
    caught = {e: c["Next"] for c in task.get("Catch", []) for e in c["ErrorEquals"]}
    assert caught == DECISIONS.get(name, {})
    for catch in task.get("Catch", []):
        assert catch["ResultPath"] not in ("$", None), "a catch must keep the state"


def test_throttling_is_waited_out_for_minutes_not_seconds():
    for name, task in TASKS.items():
        [rule] = [r for r in task["Retry"] if "Lambda.TooManyRequestsException" in r["ErrorEquals"]]
        longest = sum(
            min(rule["IntervalSeconds"] * rule["BackoffRate"] ** n, rule["MaxDelaySeconds"])
            for n in range(rule["MaxAttempts"])
        )
        if name == "Scan Object":
            # The scanners' reserved concurrency is what a burst queues for: hours.
            assert 4 * 3600 <= longest <= 6 * 3600, name
        else:
            assert 300 <= longest <= 900, name


def test_a_burst_of_20000_at_the_default_concurrency_all_gets_scanned():
    from bench import burst

    # The deployed retry, in the simulation of the queue, the starters, the
    # scanners' concurrency and Lambda's throttling (3.5 s per object, cold starts)
    result = burst.simulate(burst.Burst(objects=20_000, scan_s=3.5), burst.deployed_retry())

    assert (result["scanned"], result["failed"]) == (20_000, 0)


def test_error_names_are_our_exception_classes():
    named = {
        e
        for s in TASKS.values()
        for rule in s.get("Retry", []) + s.get("Catch", [])
        for e in rule["ErrorEquals"]
        if not e.startswith(("Lambda.", "States."))
    }
    for name in named:
        assert issubclass(getattr(errors, name), errors.ScannerError), name


def test_transient_errors_are_retried_somewhere():
    retried = {e for s in TASKS.values() for r in s["Retry"] for e in r["ErrorEquals"]}
    for cls in errors.TRANSIENT_ERRORS:
        assert cls.__name__ in retried


def test_placeholders_are_exactly_the_mapping():
    assert statemachines.placeholders(statemachines.definition_text()) == set(
        statemachines.FUNCTION_PLACEHOLDERS
    ) - {"RecordFailureFunctionArn"}  # only the Express variant calls it
    express = statemachines.placeholders(statemachines.variant_text(True, express=True))
    assert express == set(statemachines.FUNCTION_PLACEHOLDERS) | {"FailureDeadLetterQueueUrl"}
    without = statemachines.placeholders(statemachines.variant_text(webhook=False))
    assert without == set(statemachines.FUNCTION_PLACEHOLDERS) - {
        "NotifyWebhookFunctionArn",
        "RecordFailureFunctionArn",
    }


@pytest.mark.parametrize("webhook", [True, False])
def test_render_fills_everything(webhook):
    arns = {
        fn: f"arn:aws:lambda:us-east-1:1:function:{fn}"
        for fn in statemachines.STATE_MACHINE_FUNCTIONS
    }
    text = statemachines.render(webhook, arns)
    assert "${" not in text
    rendered = json.loads(text)
    assert rendered["States"]["Scan Object"]["Resource"].endswith(":scan_object")


def test_render_refuses_a_missing_value():
    with pytest.raises(KeyError):
        statemachines.render(True, {"scan_object": "arn"})


def test_verdict_choice_covers_every_verdict_the_scanner_returns():
    from functions.shared.contracts import Verdict

    choices = STATES["Which Verdict?"]["Choices"]
    routed = {c["StringEquals"] for c in choices if "StringEquals" in c}
    assert routed == {str(v) for v in Verdict} - {"error"}
    # A result without a verdict fails at Unknown Verdict, by name, instead of
    # failing the Choice itself with States.Runtime.
    assert choices[0] == {
        "Not": {"Variable": "$.scan.verdict", "IsPresent": True},
        "Next": "Unknown Verdict",
    }
    assert STATES["Which Verdict?"]["Default"] == "Unknown Verdict"


# The transient errors each task's code can raise; each must be retried there.
RAISES = {
    "Fetch Definitions": {"DefinitionsUnavailable", "ObjectStoreUnavailable"},
    "Scan Object": {"ScanEngineUnavailable", "ObjectStoreUnavailable", "DefinitionsUnavailable"},
    "Tag As Clean": {"ObjectStoreUnavailable"},
    "Quarantine Or Delete": {"ObjectStoreUnavailable"},
    "Tag As Unscannable": {"ObjectStoreUnavailable"},
    "Record Audit": {"AuditWriteFailed", "ResultNotPublished"},
    "Notify Webhook": {"WebhookDeliveryFailed"},
}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_task_retries_the_transient_errors_its_code_raises(name):
    retried = {e for r in TASKS[name]["Retry"] for e in r["ErrorEquals"]}
    assert retried >= RAISES[name]


def test_corrupt_or_missing_definitions_fall_back_to_freshclam():
    fetch = {c["ErrorEquals"][0]: c["Next"] for c in STATES["Fetch Definitions"]["Catch"]}
    scan = {e: c["Next"] for c in STATES["Scan Object"]["Catch"] for e in c["ErrorEquals"]}
    assert fetch["DefinitionsUnavailable"] == "Use Freshclam Instead"
    assert scan["DefinitionsCorrupt"] == "Use Freshclam Instead"
    assert scan["CachedTarballMissing"] == "Use Freshclam Instead"
    corrupt = [
        r for r in STATES["Scan Object"]["Retry"] if "DefinitionsCorrupt" in r["ErrorEquals"]
    ]
    assert corrupt == [], "a corrupt tarball is not retried"


def test_tasks_pass_only_what_exists_in_every_state():
    # JSONPath Parameters that name a missing path fail with States.Runtime, which
    # no Catch sees; Fetch Definitions runs first and must not depend on input.
    assert STATES["Fetch Definitions"]["Parameters"] == {"requestedBy.$": "$$.Execution.Name"}


# -- the Express variant ---------------------------------------------------------------------

EXPRESS = statemachines.definition(webhook=True, express=True)


def test_express_tasks_record_their_own_failures():
    # Express keeps no history and emits no status change: each Task catches what
    # its (few) retries did not fix into Record Failure. The definitions fallback is
    # left to the Standard machine, where the recorder re-runs such a failure.
    for name, state in EXPRESS["States"].items():
        if state["Type"] != "Task" or name in ("Record Failure", "Keep The Failure"):
            continue
        assert state["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Record Failure"}
        ]
    assert "Use Freshclam Instead" not in EXPRESS["States"]
    assert EXPRESS["States"]["Record Failure"]["Next"] == "Scan Failed"
    assert EXPRESS["States"]["Scan Failed"]["Type"] == "Fail"
    assert EXPRESS["States"]["Unknown Verdict"]["Next"] == "Record Failure"


def test_a_failing_recorder_sends_the_state_to_its_dead_letter_queue():
    recorder = EXPRESS["States"]["Record Failure"]
    [catch] = recorder["Catch"]
    assert (catch["ErrorEquals"], catch["Next"]) == (["States.ALL"], "Keep The Failure")
    keep = EXPRESS["States"]["Keep The Failure"]
    assert keep["Resource"] == "arn:aws:states:::sqs:sendMessage"
    # The recorder's own input, so the message can be given to it again later.
    assert keep["Parameters"] == {
        "QueueUrl": "${FailureDeadLetterQueueUrl}",
        "MessageBody": recorder["Parameters"],
    }
    assert keep["Retry"]
    assert keep["Next"] == "Scan Failed"
    # AND when the queue refuses it too, the run ends with an error of its own,
    # which the log keeps and an alarm watches (it never ends as a plain failure)
    [lost] = keep["Catch"]
    assert (lost["ErrorEquals"], lost["Next"]) == (["States.ALL"], "Failure Not Kept")
    not_kept = EXPRESS["States"]["Failure Not Kept"]
    assert (not_kept["Type"], not_kept["Error"]) == ("Fail", "FailureNotKept")
    retried = {e for r in recorder["Retry"] for e in r["ErrorEquals"]}
    assert {"ResultNotPublished", "AuditWriteFailed", "ObjectStoreUnavailable"} <= retried


@pytest.mark.parametrize("webhook", [True, False])
def test_the_longest_express_run_ends_well_inside_five_minutes(webhook):
    # Every Task timing out on every attempt, every retry waiting its longest, then
    # the failure path: still recorded before Express's hard limit ends the run
    # (a whole-execution timeout could not be caught, and nothing would record it).
    worst = statemachines.worst_case_seconds(statemachines.definition(webhook, express=True))
    assert worst <= statemachines.EXPRESS_BUDGET_S < statemachines.EXPRESS_LIMIT_S
    # The Standard machine has no such bound, and needs none (status-change events).
    assert statemachines.worst_case_seconds(statemachines.definition(webhook)) == float("inf")


def test_a_scan_outlasts_the_deploys_first_fill_of_the_cache():
    # On deploy day the cache is empty until the updater's first run publishes
    # (minutes; at most its 15-minute timeout). A scan that falls back meanwhile
    # waits in its execution: Scan Object retries DefinitionsUnavailable, and each
    # attempt waits up to DEFINITIONS_WAIT_S for the cache while the updater fills it.
    from stacks.constants import DEFINITIONS_WAIT_S, UPDATER_TIMEOUT_MINUTES

    [rule] = [
        r for r in TASKS["Scan Object"]["Retry"] if "DefinitionsUnavailable" in r["ErrorEquals"]
    ]
    delays = [
        min(rule["IntervalSeconds"] * rule["BackoffRate"] ** n, rule["MaxDelaySeconds"])
        for n in range(rule["MaxAttempts"])
    ]
    attempts = 1 + rule["MaxAttempts"]
    updater_s = UPDATER_TIMEOUT_MINUTES * 60
    # The backoff alone can outlast the updater, whatever wait the stack sets
    # (a quarter of a short scanner timeout is less than DEFINITIONS_WAIT_S).
    assert sum(delays) >= updater_s
    # With FULL jitter each delay is drawn from [0, delay]: on average half of
    # it; with the default wait, the average run outlasts the updater too.
    assert sum(delays) / 2 + attempts * DEFINITIONS_WAIT_S >= updater_s
    assert attempts * DEFINITIONS_WAIT_S >= updater_s  # even when every draw is 0
    # And not for hours: 46 minutes at most (the docs say so).
    assert sum(delays) + attempts * DEFINITIONS_WAIT_S <= 46 * 60


def test_express_scans_time_out_before_express_does():
    assert EXPRESS["States"]["Scan Object"]["TimeoutSeconds"] < 300


def test_express_reads_no_redrive_count_and_standard_does():
    assert "RedriveCount" not in json.dumps(EXPRESS)
    assert "$$.Execution.RedriveCount" in json.dumps(statemachines.definition(webhook=True))


def test_express_targets_exist():
    states = EXPRESS["States"]
    for name, state in states.items():
        for target in targets(state):
            assert target in states, f"{name} -> {target}"


# -- the Rescan machine -----------------------------------------------------------------------

RESCAN = json.loads(statemachines.rescan_text())


def test_rescan_is_a_distributed_map_over_the_source_bucket():
    listed = RESCAN["States"]["Rescan Listed Objects"]
    assert listed["Type"] == "Map"
    assert listed["ItemReader"]["Resource"] == "arn:aws:states:::s3:listObjectsV2"
    assert listed["ItemReader"]["Parameters"] == {
        "Bucket": "${SourceBucketName}",
        "Prefix.$": "$.prefix",
    }
    assert listed["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    assert listed["ItemBatcher"]["BatchInput"]["runId.$"] == "$.runId"
    inventoried = RESCAN["States"]["Rescan Inventoried Objects"]
    assert inventoried["ItemReader"]["ReaderConfig"] == {"InputType": "MANIFEST"}
    for state in (listed, inventoried):
        [task] = state["ItemProcessor"]["States"].values()
        assert task["Resource"] == "${RescanBatchFunctionArn}"
        assert "ObjectStoreUnavailable" in task["Retry"][0]["ErrorEquals"]


def test_rescan_placeholders_and_input_fields():
    assert statemachines.placeholders(statemachines.rescan_text()) == {
        "SourceBucketName",
        "RescanBatchFunctionArn",
    }
    fields = statemachines.rescan_input("p/", "run")
    paths = {
        v.removeprefix("$.").split(".")[0]
        for state in RESCAN["States"].values()
        for v in json.dumps(state).replace('"', " ").split()
        if v.startswith("$.")
    }
    assert paths <= set(fields)  # every path the definition reads is always present


def test_the_committed_state_machine_picture_matches_the_definition():
    # `make diagrams` regenerates it; a change to the ASL without it fails here.
    from statemachines.graph import main as draw

    committed = (
        Path(__file__).resolve().parents[2] / "docs/diagrams/state-machine.dot"
    ).read_text()
    drawn = io.StringIO()
    with contextlib.redirect_stdout(drawn):
        draw()
    assert drawn.getvalue() == committed, "run `make diagrams`"
