"""What an execution did, read back through the Step Functions API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ExecutionReport:
    name: str
    arn: str
    status: str
    states: list[str]
    output: dict[str, Any]
    input: dict[str, Any]
    error: str | None
    cause: str | None
    events: list[dict[str, Any]]
    redrive_count: int = 0

    def count(self, event_type: str, state: str | None = None) -> int:
        """How many history events of this type (for this state's task) there are."""
        return sum(
            1
            for e in self.events
            if e["type"] == event_type and (state is None or e.get("state") == state)
        )

    @property
    def failed_state(self) -> str | None:
        """The state the execution stopped in, when it did not succeed."""
        return self.states[-1] if self.status != "SUCCEEDED" and self.states else None


def read_report(sfn: Any, described: dict[str, Any]) -> ExecutionReport:
    history = sfn.get_execution_history(executionArn=described["executionArn"])["events"]
    events = []
    states = []
    current = None
    for event in history:
        entered = event.get("stateEnteredEventDetails")
        if entered:
            current = entered["name"]
            states.append(current)
        events.append({"type": event["type"], "state": current})
    return ExecutionReport(
        name=described["name"],
        arn=described["executionArn"],
        status=described["status"],
        states=states,
        output=json.loads(described.get("output") or "{}"),
        input=json.loads(described.get("input") or "{}"),
        error=described.get("error"),
        cause=described.get("cause"),
        events=events,
        redrive_count=int(described.get("redriveCount") or 0),
    )
