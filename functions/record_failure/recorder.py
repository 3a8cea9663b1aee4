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
from functions.shared.contracts import REMOVING_ACTIONS, ObjectRef, result_summary
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
