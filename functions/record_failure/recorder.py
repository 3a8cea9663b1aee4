"""Recording a failed execution (or the redrive that fixed it), and catching up on
the notices EventBridge never delivered.

EventBridge delivers Step Functions' status changes on a best-effort basis: a
notice can arrive late, twice, or not at all. Late and repeated ones are
recognised (``superseded``, the audit write conditional on ``redriveCount``);
missing ones are caught up by ``reconcile``, which a schedule runs: it lists
the executions that failed (or succeeded after a redrive) in a recent window
and records each one whose audit item does not say so yet.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from functions.apply_verdict.actions import VerdictApplier
from functions.record_audit.audit import build_item, scan_id, write_item
from functions.record_audit.schema import PARTITION_KEY, SORT_KEY
from functions.record_failure.failures import (
    FAILURE_STATUSES,
    REDRIVEN_SUCCESS,
    STATUS_CHANGE,
    STATUS_ERRORS,
    FailedExecution,
    failure_state,
    final_state,
    infer_failed_state,
    mark_object,
    notify,
    reached_state,
    superseded,
)
from functions.shared.aws import error_code
from functions.shared.clock import from_epoch_millis
from functions.shared.contracts import (
    REMOVING_ACTIONS,
    ExecutionRef,
    ObjectRef,
    result_summary,
)
from functions.shared.errors import (
    InvalidInput,
    ObjectStoreUnavailable,
    ReconciliationIncomplete,
)
from functions.shared.holds import HoldStore
from functions.shared.results_bus import publish

log = logging.getLogger(__name__)

# How long a scan execution can run without a redrive, with every retry at its
# longest (the definitions wait is the longest path, about 46 minutes), and how
# long after its stop an execution may still be redriven (Step Functions: 14 days).
LONGEST_RUN = dt.timedelta(hours=6)
# An Express execution runs at most 5 minutes: its start is at most this long
# before its end.
EXPRESS_LONGEST_MS = 5 * 60 * 1000
REDRIVE_REACH = dt.timedelta(days=14, hours=6)

# Express failures a Standard run would end the same way: recorded, not re-run.
EXPRESS_FINAL_ERRORS = frozenset(
    {"WebhookRejected", "ObjectActionRefused", "InvalidInput", "UnknownVerdict", "ScanFailed"}
)


@dataclass
class FailureRecorder:
    sfn: Any
    s3: Any
    dynamodb: Any
    lam: Any
    table: str
    notify_function: str | None = None
    # The Standard machine: where an Express execution whose scan timed out runs again.
    standard_state_machine_arn: str | None = None
    # Object Scan Result events, as Record Audit publishes them for completed runs.
    events: Any = None
    event_bus: str = "default"
    # CloudWatch Logs, for the Express machine's execution log.
    logs: Any = None

    def _announce(self, key: dict[str, Any], summary: dict[str, Any]) -> None:
        if self.events is not None and "superseded" not in key:
            publish(self.events, self.event_bus, summary)

    def _applier(self) -> VerdictApplier:
        """Marks objects (no quarantine here), keeping and reading infected holds."""
        return VerdictApplier(self.s3, None, HoldStore(self.dynamodb, self.table))

    def record(self, failed: FailedExecution) -> dict[str, Any]:
        if failed.express:
            failed_state, reached = infer_failed_state(failed.reached or {}), failed.reached or {}
        else:
            stale = superseded(self.sfn, failed)
            if stale:
                # A newer attempt (a redrive) speaks for itself.
                return {"ignored": stale}
            if failed.succeeded:
                # The redrive fixed it: the item tells the final outcome, failure fields gone.
                final = final_state(self.sfn, failed)
                item = build_item(final, failed.execution)
                key = write_item(self.dynamodb, self.table, item, unless_newer=True)
                self._announce(key, result_summary(final, failed.execution))
                return {"audit": key}
            failed_state, reached = reached_state(self.sfn, failed)
        state = failure_state(failed, reached)
        marking = mark_object(self._applier(), state, failed.error, failed.execution)
        if marking.get("held"):
            state["held"] = marking["held"]  # the audit item says infected, as the tag does
        rerun = self._rerun_on_standard(failed, state) if failed.express else None
        item = build_item(state, failed.execution) | {
            "failedState": failed_state,
            "executionStatus": failed.status,
            "objectMarking": marking,
            "workflow": "EXPRESS" if failed.express else "STANDARD",
            "rerunOn": rerun,
        }
        key = write_item(self.dynamodb, self.table, item, unless_newer=True)
        notification = None
        webhook_failed = failed.error.startswith("Webhook")
        # An Express run that is not run again (above) has no redrive either: after a
        # transient webhook failure this notice is its last chance. If it fails again,
        # so does this, and the failure waits in the DLQ for a replay.
        last_chance = failed.express and rerun is None and failed.error == "WebhookDeliveryFailed"
        if self.notify_function and (not webhook_failed or last_chance) and "superseded" not in key:
            notification = notify(self.lam, self.notify_function, state, failed.execution)
        # After the webhook: EventBridge being down must not cost the notice too.
        self._announce(
            key,
            result_summary(state, failed.execution)
            | {"failedState": failed_state, "workflow": item["workflow"]},
        )
        if marking.get("retry"):
            # Recorded and announced, but the object may still carry a forged or
            # stale tag: fail, so Lambda retries and then the DLQ (and its alarm) has it.
            raise ObjectStoreUnavailable(f"{failed.execution.arn}: {marking['note']}")
        return {
            "audit": key,
            "failedState": failed_state,
            "marking": marking,
            "notification": notification,
            "rerunOn": rerun,
        }

    def _rerun_on_standard(self, failed: FailedExecution, state: dict[str, Any]) -> str | None:
        """An Express run that a Standard run could still finish starts again there:
        a timeout (a large object, a cold scanner loading the whole database), a
        transient error Express gave up on early to stay within its 5 minutes, the
        definitions fallback. Standard has the full retries, and Redrive. A failure
        no rerun would change (a rejected webhook, a refused delete, bad input) is
        only recorded, and so is one that failed after it quarantined or deleted the
        version (a webhook or audit write down): a re-run from scratch would find it
        gone and announce it skipped. After a tag, a re-run is harmless, and it
        delivers the notice the webhook missed."""
        if (
            failed.error in EXPRESS_FINAL_ERRORS
            or (state.get("action") or {}).get("action") in REMOVING_ACTIONS
            or not self.standard_state_machine_arn
        ):
            return None
        trigger = dict(state.get("trigger") or {})
        trigger.update({"retryOf": failed.execution.arn, "reason": f"express-{failed.error}"})
        name = failed.execution.name  # same name: the Standard machine's own namespace
        try:
            self.sfn.start_execution(
                stateMachineArn=self.standard_state_machine_arn,
                name=name,
                input=json.dumps({"object": state.get("object"), "trigger": trigger}),
            )
        except ClientError as err:
            if error_code(err) != "ExecutionAlreadyExists":
                raise
        arn = self.standard_state_machine_arn.replace(":stateMachine:", ":execution:")
        return f"{arn}:{name}"

    # -- catching up ---------------------------------------------------------------------

    def reconcile(self, state_machine_arn: str, window: dt.timedelta) -> dict[str, Any]:
        """Record every execution that ended in the window and whose audit item misses
        its ending.

        One that cannot be recorded (the webhook down, S3 throttling the marking)
        does not stop the others: each is tried, and those that failed are
        returned under ``failed`` (the handler then fails the run, after its
        metrics: see ``incomplete``); the next run tries them again.
        """
        cutoff = dt.datetime.now(dt.UTC) - window
        caught_up: list[str] = []
        failures: dict[str, str] = {}
        endings = self._endings(state_machine_arn, cutoff)
        for listed in endings:
            try:
                described = self.sfn.describe_execution(executionArn=listed["executionArn"])
                failed = FailedExecution.from_event(notice(described))
                if self._recorded(failed):
                    continue
                log.warning("status change never recorded; catching up: %s", failed.execution.arn)
                self.record(failed)
            except InvalidInput as err:
                log.error("cannot record %s: %s", listed["executionArn"], err)
                continue
            except Exception as err:  # noqa: BLE001 - each ending on its own; all said at the end
                log.error("recording %s failed: %s", listed["executionArn"], err)
                failures[listed["name"]] = f"{type(err).__name__}: {err}"
                continue
            caught_up.append(failed.execution.name)
        return {"checked": len(endings), "caughtUp": caught_up, "failed": failures}

    def reconcile_express(self, log_group: str, window: dt.timedelta) -> dict[str, Any]:
        """Record every Express execution that failed in the window and that no audit
        item tells: Express keeps no history, so its log is read (level ALL, with
        execution data: the input of its ExecutionStarted names the object).

        An Express run records its own failure; one whose recorder and dead-letter
        queue both failed ends with FailureNotKept and is found only here. Each is
        recorded as its own Record Failure would have (object marked, audit item,
        notice, a re-run on the Standard machine when one could finish it).
        Without execution data nothing names the object: such a failure is
        counted (``unreadable``) and its alarm is the trace.
        """
        cutoff = dt.datetime.now(dt.UTC) - window
        since = int(cutoff.timestamp() * 1000)
        started = {
            e["execution_arn"]: e
            for e in self._log_events(log_group, since - EXPRESS_LONGEST_MS, "ExecutionStarted")
        }
        # The state each one failed with: the input of the Fail state it ended in.
        last_states = {
            e["execution_arn"]: e for e in self._log_events(log_group, since, "FailStateEntered")
        }
        caught_up: list[str] = []
        failures: dict[str, str] = {}
        unreadable: list[str] = []
        ended = [
            *self._log_events(log_group, since, "ExecutionFailed"),
            *self._log_events(log_group, since, "ExecutionTimedOut"),
        ]
        for event in ended:
            arn = str(event.get("execution_arn"))
            failed = _express_failure(event, started.get(arn), last_states.get(arn))
            if failed is None:
                unreadable.append(arn)
                continue
            try:
                if self._recorded_express(failed):
                    continue
                log.warning("Express failure never recorded; catching up: %s", arn)
                self.record(failed)
            except InvalidInput as err:
                log.error("cannot record %s: %s", arn, err)
                continue
            except Exception as err:  # noqa: BLE001 - each ending on its own; all said at the end
                log.error("recording %s failed: %s", arn, err)
                failures[failed.execution.name] = f"{type(err).__name__}: {err}"
                continue
            caught_up.append(failed.execution.name)
        return {
            "checked": len(ended),
            "caughtUp": caught_up,
            "failed": failures,
            "unreadable": unreadable,
        }

    def _log_events(self, group: str, since_ms: int, event_type: str) -> list[dict[str, Any]]:
        """The Express log's events of one type since ``since_ms``, parsed."""
        found = []
        args: dict[str, Any] = {
            "logGroupName": group,
            "startTime": max(since_ms, 0),
            "filterPattern": f'"{event_type}"',
        }
        while True:
            page = self.logs.filter_log_events(**args)
            for raw in page.get("events", []):
                try:
                    event = json.loads(raw["message"])
                except (KeyError, ValueError):
                    continue
                if isinstance(event, dict) and event.get("type") == event_type:
                    found.append(event)
            if not page.get("nextToken"):
                return found
            args["nextToken"] = page["nextToken"]

    def _recorded_express(self, failed: FailedExecution) -> bool:
        """Does any audit item of the object tell this execution? (Its start time in
        the log may differ from the one Record Failure keyed it by: the name decides.)"""
        try:
            obj = ObjectRef.from_dict(failed.input.get("object"))
        except InvalidInput:
            return True  # not one of ours to record
        args: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#pk = :pk",
            "FilterExpression": "executionName = :name",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY},
            "ExpressionAttributeValues": {
                ":pk": {"S": obj.uri},
                ":name": {"S": failed.execution.name},
            },
            "ConsistentRead": True,
        }
        while True:
            page = self.dynamodb.query(**args)
            if page.get("Items"):
                return True
            if "LastEvaluatedKey" not in page:
                return False
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _endings(self, arn: str, cutoff: dt.datetime) -> list[dict[str, Any]]:
        """Executions that stopped after ``cutoff``: failed ones, and redriven successes.

        ListExecutions pages newest start first, but the window is about stop
        dates: a run that started long before the cutoff may have stopped in
        it. A run that was never redriven stopped at most ``LONGEST_RUN``
        after its start; a redriven one may have been redriven up to 14 days
        after it stopped, so those are listed back that far.
        """
        found: dict[str, dict[str, Any]] = {}
        queries = [
            ({"statusFilter": status, "redriveFilter": redrive}, back)
            for status in FAILURE_STATUSES
            for redrive, back in (("NOT_REDRIVEN", LONGEST_RUN), ("REDRIVEN", REDRIVE_REACH))
        ]
        queries.append(({"statusFilter": REDRIVEN_SUCCESS, "redriveFilter": "REDRIVEN"},
                        REDRIVE_REACH))  # fmt: skip
        for query, back in queries:
            started_after = cutoff - back
            paginator = self.sfn.get_paginator("list_executions")
            for page in paginator.paginate(stateMachineArn=arn, **query):
                batch = page["executions"]
                for execution in batch:
                    stopped = execution.get("stopDate") or execution["startDate"]
                    if stopped >= cutoff:
                        found[execution["executionArn"]] = execution
                # Newest start first: once a page started before any run that can
                # have stopped in the window, stop.
                if batch and batch[-1]["startDate"] < started_after:
                    break
        return list(found.values())

    def _recorded(self, failed: FailedExecution) -> bool:
        """Does the audit item already tell this ending (at this redrive count)?"""
        try:
            obj = ObjectRef.from_dict(failed.input.get("object"))
        except InvalidInput:
            return True  # not one of ours to record
        item = self.dynamodb.get_item(
            TableName=self.table,
            Key={
                PARTITION_KEY: {"S": obj.uri},
                SORT_KEY: {"S": scan_id(failed.execution)},
            },
            ConsistentRead=True,
        ).get("Item")
        if not item:
            return False
        marking = item.get("objectMarking", {}).get("M", {})
        if marking.get("retry", {}).get("BOOL", False):
            return False  # recorded, but its object still waits for its mark
        redrives = int(item.get("redriveCount", {}).get("N", "0"))
        failed_flag = item.get("failed", {}).get("BOOL", False)
        return redrives > failed.execution.redrive_count or (
            redrives == failed.execution.redrive_count and failed_flag != failed.succeeded
        )


def _express_failure(
    ended: dict[str, Any], started: dict[str, Any] | None, last: dict[str, Any] | None
) -> Any:
    """The FailedExecution an Express log tells, or None when no input was logged."""
    execution_input = _logged_input(started)
    if not started or not isinstance(execution_input, dict):
        return None
    # The state it ended with (its error, and whatever the steps had added) when
    # the Fail state's input was logged; else only the execution's input.
    state = _logged_input(last)
    reached = state if isinstance(state, dict) else execution_input
    error = reached.get("error") if isinstance(reached.get("error"), dict) else {}
    details = {**(ended.get("details") or {})}
    if error.get("Error"):
        details = {"error": error["Error"], "cause": error.get("Cause")}
    reached = {k: v for k, v in reached.items() if k not in _FAILURE_KEYS}
    arn = str(ended["execution_arn"])
    status = "TIMED_OUT" if ended.get("type") == "ExecutionTimedOut" else "FAILED"
    return FailedExecution(
        execution=ExecutionRef(
            arn=arn,
            name=_execution_name(arn),
            start_time=from_epoch_millis(int(started["event_timestamp"])),
            redrive_count=0,
        ),
        status=status,
        error=str(details.get("error") or STATUS_ERRORS.get(status, "Unknown")),
        cause=str(details.get("cause") or ""),
        input=execution_input,
        reached=reached,
    )


def _execution_name(arn: str) -> str:
    """An execution's name from its ARN: Express ARNs end ``:express:<machine>:<name>:<id>``
    (Express names are not unique), Standard ones ``:execution:<machine>:<name>``."""
    parts = arn.split(":")
    return parts[-2] if len(parts) > 7 and parts[5] == "express" else parts[-1]


# What the failure path adds to the state: not part of what the steps reached.
_FAILURE_KEYS = ("error", "recordError", "keepError", "recorded")


def _logged_input(event: dict[str, Any] | None) -> Any:
    raw = ((event or {}).get("details") or {}).get("input")
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def incomplete(result: dict[str, Any]) -> ReconciliationIncomplete | None:
    """The error a reconciliation that could not record everything ends with."""
    failures = result.get("failed") or {}
    if not failures:
        return None
    said = "; ".join(f"{name}: {why}" for name, why in failures.items())
    return ReconciliationIncomplete(
        f"{len(result['caughtUp'])} endings caught up, {len(failures)} could not be "
        f"recorded: {said[:4000]}"
    )


def notice(described: dict[str, Any]) -> dict[str, Any]:
    """The status-change event EventBridge would have sent, from DescribeExecution."""

    def millis(moment: Any) -> int | None:
        return int(moment.timestamp() * 1000) if isinstance(moment, dt.datetime) else None

    return {
        "detail-type": STATUS_CHANGE,
        "source": "aws.states",
        "detail": {
            "executionArn": described["executionArn"],
            "stateMachineArn": described.get("stateMachineArn"),
            "name": described["name"],
            "status": described["status"],
            "startDate": millis(described["startDate"]),
            "stopDate": millis(described.get("stopDate")),
            "input": described.get("input"),
            "output": described.get("output"),
            "error": described.get("error"),
            "cause": described.get("cause"),
            "redriveCount": described.get("redriveCount", 0),
        },
    }
