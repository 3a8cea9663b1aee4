"""What a failed execution leaves behind: its audit item, its object's tag, its notice.

The state machine has no failure path of its own: a Task that still fails
after its retries fails the execution right there, so the console's Redrive
resumes at that Task. EventBridge announces the failure (``Step Functions
Execution Status Change``, status FAILED, TIMED_OUT or ABORTED) and this
records it:

1. the state the execution had reached is the input of the state it stopped
   in, read from the execution's history (each step adds its result under
   its own key, so that input holds the scan result if there was one);
2. the object is marked when its verdict was never applied (an infected
   verdict as ``infected``, anything else as ``scan-status=error``), so a
   forged or stale tag never outlives a failed scan;
3. the audit item of the execution (one per execution, keyed like Record
   Audit's) is written with ``failed: true``, the error, the state it failed
   in and the verdict if one was reached, unless a later redrive already
   recorded the execution;
4. the webhook, when there is one, gets ``scan.failed`` (unless the webhook
   is what failed), through the Notify Webhook function, which alone knows
   its URL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from functions.shared.clock import from_epoch_millis, normalize_iso
from functions.shared.contracts import ExecutionRef, ObjectRef, scanned_object, state_event
from functions.shared.errors import InvalidInput, WebhookDeliveryFailed

STATUS_CHANGE = "Step Functions Execution Status Change"
FAILURE_STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")
# A redrive that succeeds may resume after Record Audit (at Notify Webhook):
# its success is recorded from the execution's output.
REDRIVEN_SUCCESS = "SUCCEEDED"
# What the status means when the execution itself names no error.
STATUS_ERRORS = {"TIMED_OUT": "States.Timeout", "ABORTED": "ExecutionAborted"}


@dataclass(frozen=True)
class FailedExecution:
    """The execution a status-change event is about (failed, or succeeded after a redrive)."""

    execution: ExecutionRef
    status: str
    error: str
    cause: str
    input: dict[str, Any]
    output: dict[str, Any] | None = None
    # An Express execution reports its own failure, with the state it reached
    # (it keeps no history to read it from).
    reached: dict[str, Any] | None = None

    @property
    def express(self) -> bool:
        return self.reached is not None

    @classmethod
    def from_express(cls, event: Any) -> FailedExecution:
        """``{"state", "execution", "workflow": "EXPRESS"}`` from the Express variant's catch."""
        state, execution = state_event(event)
        error = state.get("error") if isinstance(state.get("error"), dict) else {}
        return cls(
            execution=execution,
            status="FAILED",
            error=str(error.get("Error") or "Unknown"),
            cause=str(error.get("Cause") or ""),
            input={"object": state.get("object"), "trigger": state.get("trigger")},
            reached={k: v for k, v in state.items() if k != "error"},
        )

    @property
    def succeeded(self) -> bool:
        return self.status == REDRIVEN_SUCCESS

    @classmethod
    def from_event(cls, event: Any) -> FailedExecution:
        detail = event.get("detail") if isinstance(event, dict) else None
        if not isinstance(detail, dict) or event.get("detail-type") != STATUS_CHANGE:
            raise InvalidInput(f"not a {STATUS_CHANGE!r} event")
        status = str(detail.get("status"))
        if status not in (*FAILURE_STATUSES, REDRIVEN_SUCCESS):
            raise InvalidInput(f"execution status {status!r} is neither a failure nor a success")
        try:
            execution = ExecutionRef(
                arn=str(detail["executionArn"]),
                name=str(detail["name"]),
                start_time=from_epoch_millis(detail["startDate"]),
                redrive_count=int(detail.get("redriveCount") or 0),
            )
            raw_input = detail.get("input")
            execution_input = json.loads(raw_input) if raw_input else {}
            raw_output = detail.get("output")
            output = json.loads(raw_output) if raw_output else None
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidInput(f"status change event lacks {err}") from err
        return cls(
            execution=execution,
            status=status,
            error=str(detail.get("error") or STATUS_ERRORS.get(status, "Unknown")),
            cause=str(detail.get("cause") or f"the execution {status.lower().replace('_', ' ')}"),
            input=execution_input,
            output=output if isinstance(output, dict) else None,
        )


def final_state(sfn: Any, done: FailedExecution) -> dict[str, Any]:
    """A succeeded execution's whole story: its output (from the event, or described
    when EventBridge left it out for size)."""
    if done.output is not None:
        return done.output
    described = sfn.describe_execution(executionArn=done.execution.arn)
    return json.loads(described.get("output") or "{}")


def reached_state(sfn: Any, failed: FailedExecution) -> tuple[str | None, dict[str, Any]]:
    """The state the execution stopped in, and the input it gave that state.

    Falls back to the execution's input when no state was entered.
    """
    last: tuple[int, str, str] | None = None
    args: dict[str, Any] = {"executionArn": failed.execution.arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**args)
        for event in page["events"]:
            entered = event.get("stateEnteredEventDetails")
            if entered and (last is None or event["id"] > last[0]):
                last = (event["id"], entered["name"], entered.get("input") or "{}")
        if not page.get("nextToken"):
            break
        args["nextToken"] = page["nextToken"]
    if last is None:
        return None, dict(failed.input)
    return last[1], json.loads(last[2])


# The steps in order, and the key each adds to the state: the first whose key is
# missing is where a linear run stopped.
_STEPS = (
    ("definitions", "Fetch Definitions"),
    ("scan", "Scan Object"),
    ("action", "Apply Verdict"),
    ("audit", "Record Audit"),
    ("notification", "Notify Webhook"),
)


def infer_failed_state(state: dict[str, Any]) -> str:
    """Where an Express execution stopped, from what its state holds."""
    scan = state.get("scan") or {}
    for key, step in _STEPS:
        if key == "action" and scan.get("verdict") == "skipped":
            continue  # skipped objects go from Which Verdict? to Record Audit
        if not state.get(key):
            if key == "action":
                return {
                    "clean": "Tag As Clean",
                    "infected": "Quarantine Or Delete",
                    "unscannable": "Tag As Unscannable",
                }.get(str(scan.get("verdict")), "Which Verdict?")
            return step
    return "Notify Webhook"


def failure_state(failed: FailedExecution, reached: dict[str, Any]) -> dict[str, Any]:
    """The execution state as Record Audit would have seen it, with the error added."""
    state = dict(reached)
    state.setdefault("object", failed.input.get("object"))
    state.setdefault("trigger", failed.input.get("trigger"))
    state["error"] = {"Error": failed.error, "Cause": failed.cause}
    return state


def mark_object(
    applier: Any, state: dict[str, Any], error: str, execution: ExecutionRef
) -> dict[str, Any]:
    """Tag the object if its verdict was never applied; what happened.

    The tag's time is the scan's (or, with no scan, the execution's start):
    a redrive of this execution then replaces it, and it never replaces what
    a newer scan wrote unless it is stricter.
    """
    if state.get("action"):
        return {"markedAs": None, "note": "the verdict was applied before the failure"}
    try:
        obj = ObjectRef.from_dict(state.get("object"))
    except InvalidInput as err:
        return {"markedAs": None, "note": f"no object to mark: {err}"}
    scan = state.get("scan") or {}
    obj = scanned_object(obj, scan.get("scannedVersionId"), scan.get("scannedETag"))
    when = scan.get("scannedAt") or normalize_iso(execution.start_time)
    return applier.mark_unfinished(obj, scan, error, when)


def superseded(sfn: Any, failed: FailedExecution) -> str | None:
    """Why this notice is out of date, if it is: the execution is running again
    (a redrive is under way) or a later redrive already ended."""
    described = sfn.describe_execution(executionArn=failed.execution.arn)
    redrives = int(described.get("redriveCount") or 0)
    if described["status"] == "RUNNING":
        return "a redrive of this execution is running"
    if redrives > failed.execution.redrive_count:
        return f"redrive {redrives} of this execution already ended ({described['status']})"
    return None


def notify(lam: Any, function: str, state: dict[str, Any], execution: ExecutionRef) -> dict:
    """``scan.failed`` through Notify Webhook (synchronously, so a failure is ours to retry)."""
    payload = {
        "state": state,
        "execution": {
            "id": execution.arn,
            "name": execution.name,
            "startTime": execution.start_time,
            "redriveCount": execution.redrive_count,
        },
    }
    response = lam.invoke(FunctionName=function, Payload=json.dumps(payload).encode())
    body = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError"):
        message = body.get("errorMessage") if isinstance(body, dict) else body
        raise WebhookDeliveryFailed(f"the scan.failed notice was not delivered: {message}")
    return body
