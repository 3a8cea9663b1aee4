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
from functions.shared.errors import InvalidInput, ObjectStoreUnavailable
from functions.shared.results_bus import publish

log = logging.getLogger(__name__)

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
        marking = mark_object(VerdictApplier(self.s3, None), state, failed.error, failed.execution)
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
        """Record every execution in the window whose audit item misses its ending."""
        cutoff = dt.datetime.now(dt.UTC) - window
        caught_up, checked = [], 0
        for listed in self._endings(state_machine_arn, cutoff):
            checked += 1
            described = self.sfn.describe_execution(executionArn=listed["executionArn"])
            failed = FailedExecution.from_event(notice(described))
            if self._recorded(failed):
                continue
            log.warning("status change never recorded; catching up: %s", failed.execution.arn)
            try:
                self.record(failed)
            except InvalidInput as err:
                log.error("cannot record %s: %s", failed.execution.arn, err)
                continue
            caught_up.append(failed.execution.name)
        return {"checked": checked, "caughtUp": caught_up}

    def _endings(self, arn: str, cutoff: dt.datetime) -> list[dict[str, Any]]:
        """Executions that stopped after ``cutoff``: failed ones, and redriven successes."""
        found = []
        queries = [{"statusFilter": status} for status in FAILURE_STATUSES]
        queries.append({"statusFilter": REDRIVEN_SUCCESS, "redriveFilter": "REDRIVEN"})
        for query in queries:
            paginator = self.sfn.get_paginator("list_executions")
            for page in paginator.paginate(stateMachineArn=arn, **query):
                batch = page["executions"]
                found += [e for e in batch if (e.get("stopDate") or e["startDate"]) >= cutoff]
                # Newest first: once a whole page started before the cutoff, stop.
                if batch and batch[-1]["startDate"] < cutoff:
                    break
        return found

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
        redrives = int(item.get("redriveCount", {}).get("N", "0"))
        failed_flag = item.get("failed", {}).get("BOOL", False)
        return redrives > failed.execution.redrive_count or (
            redrives == failed.execution.redrive_count and failed_flag != failed.succeeded
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
