"""The ASL file itself: every path leads somewhere, every Task can fail safely."""

from __future__ import annotations

import json

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


def targets(state: dict) -> list[str]:
    found = [state.get("Next"), state.get("Default")]
    found += [c["Next"] for c in state.get("Choices", [])]
    found += [c["Next"] for c in state.get("Catch", [])]
    return [t for t in found if t]


def test_every_target_exists():
    assert ASL["StartAt"] in STATES
    for name, state in STATES.items():
        for target in targets(state):
            assert target in STATES, f"{name} -> {target}"


def test_every_state_is_reachable():
    seen, todo = set(), [ASL["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(targets(STATES[name]))
    assert seen == set(STATES)


def test_only_terminal_states_end():
    for name, state in STATES.items():
        if state["Type"] in ("Succeed", "Fail"):
            continue
        assert targets(state), f"{name} goes nowhere"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_retries_lambda_errors_and_catches_the_rest(name):
    task = TASKS[name]
    retried = {e for r in task["Retry"] for e in r["ErrorEquals"]}
    assert retried >= LAMBDA_SERVICE_ERRORS
    for retry in task["Retry"]:
        assert retry["BackoffRate"] >= 1.5
        assert retry["JitterStrategy"] == "FULL"
    assert any("States.ALL" in c["ErrorEquals"] for c in task["Catch"])
    for catch in task["Catch"]:
        assert catch["ResultPath"] not in ("$", None), "a catch must keep the state"


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
    ) | {"WebhookConfigured"}


def test_render_fills_everything():
    arns = {
        fn: f"arn:aws:lambda:us-east-1:1:function:{fn}"
        for fn in statemachines.STATE_MACHINE_FUNCTIONS
    }
    text = statemachines.render(statemachines.substitutions(arns, webhook_configured=True))
    assert "${" not in text
    rendered = json.loads(text)
    assert rendered["States"]["Scan Object"]["Resource"].endswith(":scan_object")


def test_render_refuses_a_missing_value():
    with pytest.raises(KeyError, match="ScanObjectFunctionArn"):
        statemachines.render({"WebhookConfigured": "true"})


def test_verdict_choice_covers_every_verdict_the_scanner_returns():
    from functions.shared.contracts import Verdict

    choices = STATES["Which Verdict?"]["Choices"]
    routed = {c["StringEquals"] for c in choices if "StringEquals" in c}
    assert routed == {str(v) for v in Verdict} - {"error"}
    # A result without a verdict goes to the failure path instead of failing the
    # Choice itself (States.Runtime, which no Catch sees).
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
    "Record Audit": {"AuditWriteFailed"},
    "Record Failure": {"AuditWriteFailed"},
    "Notify Webhook": {"WebhookDeliveryFailed"},
    "Notify Webhook Of Failure": {"WebhookDeliveryFailed"},
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
