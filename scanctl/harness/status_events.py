"""EventBridge's ``Step Functions Execution Status Change`` events, which moto 5.2 never emits.

What AWS does (and this does): when an execution of the state machine ends
FAILED, TIMED_OUT or ABORTED, or SUCCEEDED after a redrive, the stack's rule
sends the event to the failure recorder, invoked asynchronously: an error is
retried twice, then the event goes to the recorder's DLQ. The event carries what AWS's does
(execution ARN, name, status, start and stop dates in epoch milliseconds,
input, error, cause, redriveCount).

Where it differs: AWS delivers within seconds, possibly more than once and
out of order with a redrive; here delivery is immediate, once per ending, on
the thread that ran the execution, and ``LocalScanner.wait`` returns only
after it. The recorder is written for AWS's order (a late failure notice
never overwrites a redrive's success), which the tests exercise directly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from scanctl.harness.environment import ACCOUNT_ID, REGION


def express_log_events(execution: Any) -> list[dict[str, Any]]:
    """The execution's events as an Express machine logs them (level ALL, execution
    data included): one JSON message per history event, its details under
    ``details``."""
    messages = []
    for event in execution.to_history_output()["events"]:
        details = next((value for key, value in event.items() if key.endswith("EventDetails")), {})
        when = event["timestamp"]
        if not isinstance(when, dt.datetime):
            when = dt.datetime.fromisoformat(str(when).replace("Z", "+00:00"))
        millis = int(when.timestamp() * 1000)
        message = {
            "id": str(event["id"]),
            "type": str(getattr(event["type"], "value", event["type"])),
            "details": json.loads(json.dumps(details, default=str)),
            "previous_event_id": str(event.get("previousEventId", 0)),
            "event_timestamp": str(millis),
            "execution_arn": execution.exec_arn,
            "redrive_count": "0",
        }
        messages.append({"timestamp": millis, "message": json.dumps(message)})
    return messages


def status_change_event(execution: Any) -> dict[str, Any]:
    from functions.record_failure.failures import STATUS_CHANGE

    def millis(moment: dt.datetime | None) -> int | None:
        return int(moment.timestamp() * 1000) if moment else None

    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": STATUS_CHANGE,
        "source": "aws.states",
        "account": ACCOUNT_ID,
        "time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [execution.exec_arn],
        "detail": {
            "executionArn": execution.exec_arn,
            "stateMachineArn": execution.state_machine.arn,
            "name": execution.name,
            "status": execution.status,
            "startDate": millis(execution.start_date),
            "stopDate": millis(execution.stop_date),
            "input": json.dumps(execution.input_data),
            "output": json.dumps(execution.output) if execution.output is not None else None,
            "error": execution.error,
            "cause": execution.cause,
            "redriveCount": getattr(execution, "redrive_count", 0),
            "redriveStatus": "REDRIVABLE",
        },
    }


class StatusChanges:
    """Delivers each failed ending to ``deliver`` and lets waiters know when it is done."""

    def __init__(self, deliver: Callable[[dict[str, Any]], None]) -> None:
        from functions.record_failure.failures import FAILURE_STATUSES

        self.deliver = deliver
        # Express executions' log (level ALL), written when each ends.
        self.log_express: Callable[[Any], None] | None = None
        self.statuses = FAILURE_STATUSES
        # EventBridge delivers these on a best-effort basis: a test can make it
        # lose the next few, as AWS may.
        self.lose_next = 0
        self._done: dict[tuple[str, int], threading.Event] = {}
        self._lock = threading.Lock()
        # Open while the harness is: deliveries under way are let finish before it
        # closes, and none starts after (an execution's thread can outlive it).
        self._active = False
        self._in_flight = 0
        self._idle = threading.Condition()

    def _flag(self, arn: str, redrives: int) -> threading.Event:
        with self._lock:
            return self._done.setdefault((arn, redrives), threading.Event())

    def matches(self, status: str, redrive_count: int) -> bool:
        """The stack's rule: a failure, or a success that a redrive brought."""
        return status in self.statuses or (status == "SUCCEEDED" and redrive_count > 0)

    def ended(self, execution: Any) -> None:
        with self._idle:
            if not self._active:
                return
            self._in_flight += 1
        try:
            self._ended(execution)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _ended(self, execution: Any) -> None:
        redrives = getattr(execution, "redrive_count", 0)
        # moto leaves ``sm_type`` at STANDARD; the machine's ``type`` is the truth
        machine_type = getattr(getattr(execution, "state_machine", None), "type", "STANDARD")
        express = str(getattr(machine_type, "value", machine_type)) == "EXPRESS"
        if express and self.log_express is not None:
            self.log_express(execution)  # what Step Functions writes to its log group
        if not self.matches(execution.status, redrives):
            return
        flag = self._flag(execution.exec_arn, redrives)
        if express:
            flag.set()  # Express emits no status-change events: nothing to wait for
            return
        try:
            with self._lock:
                lost, self.lose_next = self.lose_next > 0, max(self.lose_next - 1, 0)
            if not lost:
                self.deliver(status_change_event(execution))
        finally:
            flag.set()

    def wait_recorded(self, arn: str, redrives: int, timeout_s: float) -> None:
        if not self._flag(arn, redrives).wait(timeout_s):
            raise TimeoutError(f"the failure of {arn} was not recorded within {timeout_s}s")

    @contextlib.contextmanager
    def emitted(self) -> Iterator[None]:
        from moto.stepfunctions.parser.backend.execution import (
            BaseExecutionWorkerCommunication,
        )

        original = BaseExecutionWorkerCommunication.terminated
        changes = self

        def terminated(comm: Any) -> None:
            original(comm)
            changes.ended(comm.execution)

        BaseExecutionWorkerCommunication.terminated = terminated  # type: ignore[method-assign]
        with self._idle:
            self._active = True
        try:
            yield
        finally:
            with self._idle:
                self._active = False
                self._idle.wait_for(lambda: self._in_flight == 0, timeout=30)
            BaseExecutionWorkerCommunication.terminated = original  # type: ignore[method-assign]
