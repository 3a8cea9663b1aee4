"""The scan state machine: the ASL file, its variants, and the one mapping that fills it.

``scan_object.asl.json`` is the whole Standard machine, webhook included.
Variants are derived here and nowhere else (the stack, the local harness and
``bench/cost.py`` all call ``definition()`` / ``derive()``):

- without a webhook, ``Notify Webhook`` is dropped and ``Record Audit`` ends
  the execution: a state that would only decide on a deploy-time setting
  costs a transition (about $25 per million objects) and decides nothing;
- the Express variant (``WORKFLOW_TYPE=EXPRESS``) records its own failures:
  Express executions keep no history to read and emit no status-change
  events, and cannot be redriven. So every Task catches what its retries did
  not fix into ``Record Failure`` (the failure recorder, invoked directly),
  then ``Scan Failed``; Scan Object gets a timeout below Express's 5 minutes,
  so a slow scan is caught (and re-run on the Standard machine) instead of
  the whole execution timing out.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

ASL_PATH = Path(__file__).with_name("scan_object.asl.json")
RESCAN_ASL_PATH = Path(__file__).with_name("rescan.asl.json")
WEBHOOK_STATE = "Notify Webhook"
RECORD_FAILURE_STATE = "Record Failure"
FAIL_STATE = "Scan Failed"
UNKNOWN_VERDICT_STATE = "Unknown Verdict"
SCAN_STATE = "Scan Object"
# Well below Express's hard 5 minutes: a scan that takes longer is caught and
# re-run on the Standard machine instead of timing the execution out.
EXPRESS_SCAN_TIMEOUT_S = 120
_LAMBDA_ERRORS = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.TooManyRequestsException",
]
# The state that hands over to the webhook, and ends the execution without one.
LAST_STATE = "Record Audit"

# Placeholder -> the function (folder under functions/) whose ARN fills it.
FUNCTION_PLACEHOLDERS: dict[str, str] = {
    "FetchDefinitionsFunctionArn": "fetch_definitions",
    "ScanObjectFunctionArn": "scan_object",
    "ApplyVerdictFunctionArn": "apply_verdict",
    "RecordAuditFunctionArn": "record_audit",
    "NotifyWebhookFunctionArn": "notify_webhook",
    "RecordFailureFunctionArn": "record_failure",  # the Express variant only
}
STATE_MACHINE_FUNCTIONS = tuple(FUNCTION_PLACEHOLDERS.values())

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def definition_text() -> str:
    """The file as it is: every state, the webhook's included."""
    return ASL_PATH.read_text()


def definition(webhook: bool, express: bool = False) -> dict[str, Any]:
    """The definition to deploy: without a webhook, Record Audit ends it."""
    return derive(json.loads(definition_text()), webhook, express)


def derive(asl: dict[str, Any], webhook: bool, express: bool = False) -> dict[str, Any]:
    """The variant of a full definition (the file's, or a copy a tool changed)."""
    asl = copy.deepcopy(asl)
    states = asl["States"]
    if not webhook:
        del states[WEBHOOK_STATE]
        last = states[LAST_STATE]
        del last["Next"]
        last["End"] = True
    if express:
        _express(states)
    return asl


# Express: each Task's TimeoutSeconds and retries, so that the longest path, its
# retries and the failure path fit Express's hard 5 minutes with room to spare
# (worst_case_seconds(); a test holds it under EXPRESS_BUDGET_S). A failure that a
# Standard run could still fix (a transient error, a timeout, the definitions
# fallback) is started again on the Standard machine by the recorder.
EXPRESS_LIMIT_S = 300
EXPRESS_BUDGET_S = 270
EXPRESS_TASKS: dict[str, tuple[int, int]] = {  # state: (TimeoutSeconds, retries)
    "Fetch Definitions": (10, 1),
    SCAN_STATE: (EXPRESS_SCAN_TIMEOUT_S, 0),
    "Tag As Clean": (20, 1),
    "Tag As Unscannable": (20, 1),
    "Quarantine Or Delete": (20, 1),
    "Record Audit": (10, 1),
    WEBHOOK_STATE: (12, 1),
    RECORD_FAILURE_STATE: (15, 1),
}
KEEP_FAILURE_STATE = "Keep The Failure"
NOT_KEPT_STATE = "Failure Not Kept"
# The error an Express execution ends with when its failure could not be kept.
NOT_KEPT_ERROR = "FailureNotKept"
_EXPRESS_RETRY = {"IntervalSeconds": 1, "BackoffRate": 1, "MaxDelaySeconds": 1}
# Errors the recorder can meet: retried once, like the other Tasks' transient ones.
_RECORDER_ERRORS = ["AuditWriteFailed", "ObjectStoreUnavailable", "ResultNotPublished"]


def _express(states: dict[str, Any]) -> None:
    """Failures recorded from inside the execution, within Express's 5 minutes."""
    # The definitions fallback can take minutes (freshclam from the internet): on
    # Express those errors go to Record Failure, and the Standard machine falls back.
    states.pop("Use Freshclam Instead", None)
    for name, state in states.items():
        if state["Type"] != "Task":
            continue
        timeout, retries = EXPRESS_TASKS[name]
        state["TimeoutSeconds"] = timeout
        transient = sorted({e for r in state.get("Retry", []) for e in r["ErrorEquals"]})
        state["Retry"] = (
            [{"ErrorEquals": transient, "MaxAttempts": retries, **_EXPRESS_RETRY}]
            if retries
            else []
        )
        state["Catch"] = [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": RECORD_FAILURE_STATE}
        ]
        execution = (state.get("Parameters") or {}).get("execution")
        if execution and "redriveCount.$" in execution:
            del execution["redriveCount.$"]  # no redrives, and no such field, in Express
            execution["redriveCount"] = 0
    states[UNKNOWN_VERDICT_STATE] = {
        "Type": "Pass",
        "Comment": "A verdict this state machine does not know: a failure, never clean.",
        "Parameters": {
            "Error": "UnknownVerdict",
            "Cause": "Scan Object returned no verdict, or one this state machine does not know",
        },
        "ResultPath": "$.error",
        "Next": RECORD_FAILURE_STATE,
    }
    timeout, retries = EXPRESS_TASKS[RECORD_FAILURE_STATE]
    # What the recorder is given; its dead-letter queue keeps the same, to replay.
    failure = {
        "state.$": "$",
        "execution": {
            "id.$": "$$.Execution.Id",
            "name.$": "$$.Execution.Name",
            "startTime.$": "$$.Execution.StartTime",
            "redriveCount": 0,
        },
        "workflow": "EXPRESS",
    }
    states[RECORD_FAILURE_STATE] = {
        "Type": "Task",
        "Comment": "Express keeps no history and emits no status change: the failure "
        "recorder is called from here (audit item, object marked, scan.failed; a failure "
        "a Standard run could fix is started again on the Standard machine).",
        "Resource": "${RecordFailureFunctionArn}",
        "Parameters": failure,
        "ResultPath": "$.recorded",
        "TimeoutSeconds": timeout,
        "Retry": [
            {
                "ErrorEquals": [*_LAMBDA_ERRORS, *_RECORDER_ERRORS],
                "MaxAttempts": retries,
                **_EXPRESS_RETRY,
            }
        ],
        "Catch": [
            {
                "ErrorEquals": ["States.ALL"],
                "ResultPath": "$.recordError",
                "Next": KEEP_FAILURE_STATE,
            }
        ],
        "Next": FAIL_STATE,
    }
    states[KEEP_FAILURE_STATE] = {
        "Type": "Task",
        "Comment": "The recorder itself failed: the whole state goes to its dead-letter "
        "queue (alarm UnrecordedFailures), from where it can be recorded later.",
        "Resource": "arn:aws:states:::sqs:sendMessage",
        "Parameters": {"QueueUrl": "${FailureDeadLetterQueueUrl}", "MessageBody": failure},
        "TimeoutSeconds": 3,
        # Nothing else would keep this failure: one quick retry, within Express's budget.
        "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 1, "IntervalSeconds": 1}],
        "Catch": [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.keepError", "Next": NOT_KEPT_STATE}
        ],
        "ResultPath": None,
        "Next": FAIL_STATE,
    }
    states[NOT_KEPT_STATE] = {
        "Type": "Fail",
        "Comment": "Neither the recorder nor its dead-letter queue took the failure: the "
        "execution's log (with the state, unless execution data is off) is what is left, "
        "and the FailureNotKept error in it raises the UnkeptExpressFailures alarm; the "
        "hourly reconciliation reads the log and records it.",
        "Error": NOT_KEPT_ERROR,
        "Cause": "the failure recorder and its dead-letter queue both failed",
    }
    states[FAIL_STATE] = {
        "Type": "Fail",
        "Comment": "Recorded above; the execution fails so the logs and metrics show it.",
        "ErrorPath": "$.error.Error",
        "CausePath": "$.error.Cause",
    }


def worst_case_seconds(definition: dict[str, Any]) -> float:
    """The longest an execution can run: every Task on the longest path taking its
    TimeoutSeconds on every attempt, every retry waiting its longest."""
    states = definition["States"]

    def task_time(state: dict[str, Any]) -> float:
        timeout = state.get("TimeoutSeconds")
        if timeout is None:
            return float("inf")
        attempts, waits = 1, 0.0
        for retrier in state.get("Retry", []):
            n = retrier.get("MaxAttempts", 3)
            attempts += n
            delay = retrier.get("IntervalSeconds", 1)
            for _ in range(n):
                waits += min(delay, retrier.get("MaxDelaySeconds", delay))
                delay *= retrier.get("BackoffRate", 2.0)
        return attempts * timeout + waits

    memo: dict[str, float] = {}

    def longest(name: str, seen: frozenset[str]) -> float:
        if name in seen:
            return float("inf")  # a loop: no bound
        if name in memo:
            return memo[name]
        state = states[name]
        own = task_time(state) if state["Type"] == "Task" else 0.0
        nexts = [state["Next"]] if "Next" in state else []
        nexts += [c["Next"] for c in state.get("Choices", [])]
        nexts += [state["Default"]] if "Default" in state else []
        nexts += [c["Next"] for c in state.get("Catch", [])]
        rest = max((longest(n, seen | {name}) for n in nexts), default=0.0)
        memo[name] = own + rest
        return memo[name]

    return longest(definition["StartAt"], frozenset())


def variant_text(webhook: bool, express: bool = False) -> str:
    return json.dumps(definition(webhook, express), indent=2) + "\n"


def functions(webhook: bool, express: bool = False) -> tuple[str, ...]:
    """The functions the deployed definition invokes."""
    wanted = set(STATE_MACHINE_FUNCTIONS)
    if not webhook:
        wanted.discard("notify_webhook")
    if not express:
        wanted.discard("record_failure")
    return tuple(fn for fn in STATE_MACHINE_FUNCTIONS if fn in wanted)


def placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


def substitutions(
    function_arns: dict[str, str],
    webhook: bool,
    express: bool = False,
    failure_queue_url: str | None = None,
) -> dict[str, str]:
    """Every placeholder's value in the variant, from function name -> ARN (and, for
    Express, the failure recorder's dead-letter queue)."""
    values = {
        ph: function_arns[fn]
        for ph, fn in FUNCTION_PLACEHOLDERS.items()
        if fn in functions(webhook, express)
    }
    if express:
        if not failure_queue_url:
            raise KeyError("the Express variant needs the failure dead-letter queue URL")
        values["FailureDeadLetterQueueUrl"] = failure_queue_url
    return values


def render(
    webhook: bool,
    function_arns: dict[str, str],
    express: bool = False,
    failure_queue_url: str | None = None,
) -> str:
    """The variant with every placeholder filled; a missing value is an error."""
    text = variant_text(webhook, express)
    values = substitutions(function_arns, webhook, express, failure_queue_url)
    missing = placeholders(text) - set(values)
    if missing:
        raise KeyError(f"no value for placeholders {sorted(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


# -- the Rescan machine ----------------------------------------------------------------------


def rescan_text() -> str:
    return RESCAN_ASL_PATH.read_text()


def rescan_substitutions(source_bucket: str, batch_function_arn: str) -> dict[str, str]:
    return {"SourceBucketName": source_bucket, "RescanBatchFunctionArn": batch_function_arn}


def rescan_input(
    prefix: str,
    run_id: str,
    mode: str = "all",
    scanned_before: str | None = None,
    definitions_version: str | None = None,
    inventory: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Rescan machine's input (its fields are all present: its paths read them)."""
    return {
        "prefix": prefix,
        "runId": run_id,
        "mode": mode,
        "scannedBefore": scanned_before,
        "definitionsVersion": definitions_version,
        "inventory": inventory,
    }
