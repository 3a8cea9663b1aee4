"""RedriveExecution, which moto 5.2 lacks, with AWS's semantics.

What AWS does (and this does): a FAILED, TIMED_OUT or ABORTED Standard
execution that stopped within the last 14 days resumes at the state that did not
succeed, with the input that state received; the ARN stays the same; the
history continues (an ``ExecutionRedriven`` event, then the resumed states);
``$$.Execution.RedriveCount`` and DescribeExecution's ``redriveCount`` and
``redriveDate`` count the redrives; a SUCCEEDED or RUNNING execution, or one
older than 14 days, is ``ExecutionNotRedrivable``.

Where it differs: AWS keeps a failed Map or Parallel state's finished
iterations; this re-runs such a state whole (the scan workflow has none).
AWS also refuses a redrive after 1,000 redrives or 25,000 history events,
which nothing here comes near.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

REDRIVE_WINDOW = dt.timedelta(days=14)
_REDRIVABLE = ("FAILED", "TIMED_OUT", "ABORTED")


def _not_redrivable(message: str) -> Exception:
    from moto.core.exceptions import AWSError

    class ExecutionNotRedrivable(AWSError):
        TYPE = "ExecutionNotRedrivable"
        STATUS = 400

    return ExecutionNotRedrivable(message)


def resume_point(execution: Any) -> tuple[str, Any]:
    """The state that did not succeed, and the input it received."""
    events = execution.exec_worker.env.event_manager.get_event_history()
    for event in reversed(events):
        entered = event.get("stateEnteredEventDetails")
        if entered:
            return entered["name"], json.loads(entered.get("input") or "{}")
    start = json.loads(execution.state_machine.definition)["StartAt"]
    return start, execution.input_data


def redrive(execution: Any) -> dt.datetime:
    """Resume ``execution`` (a moto parser Execution) where it stopped."""
    from moto.stepfunctions.parser.api import ExecutionStatus

    status = execution.exec_status.value if execution.exec_status else None
    if status not in _REDRIVABLE:
        raise _not_redrivable(
            f"Execution is {status}; only failed, timed-out or aborted ones can be redriven"
        )
    now = dt.datetime.now(dt.UTC)
    if now - (execution.stop_date or execution.start_date) > REDRIVE_WINDOW:
        raise _not_redrivable("Execution stopped more than 14 days ago")
    state_name, state_input = resume_point(execution)
    previous = execution.exec_worker
    execution.redrive_count = getattr(execution, "redrive_count", 0) + 1
    execution.redrive_date = now
    execution.exec_status = ExecutionStatus.RUNNING
    execution.stop_date = None
    execution.error = None
    execution.cause = None
    execution.output = None
    execution.exec_worker = _redrive_worker(execution, previous, state_name, state_input)
    execution.exec_worker.start()
    return now


def _redrive_worker(execution: Any, previous: Any, state_name: str, state_input: Any) -> Any:
    from moto.stepfunctions.parser.api import HistoryEventType
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker

    class RedriveWorker(ExecutionWorker):
        def _execution_logic(self) -> None:
            definition = json.loads(self._evaluation_details.state_machine_details.definition)
            definition["StartAt"] = state_name
            program = AmazonStateLanguageParser.parse(json.dumps(definition))[0]
            self.env = self._get_evaluation_environment()
            # One history: the redrive's events follow the first run's.
            self.env.event_manager = previous.env.event_manager
            self.env.states.reset(state_input)
            self.env.event_manager.add_event(
                context=self.env.event_history_context,
                event_type=HistoryEventType.ExecutionRedriven,
                event_details=EventDetails(
                    executionRedrivenEventDetails={"redriveCount": execution.redrive_count}
                ),
                update_source_event_id=False,
            )
            program.eval(self.env)
            self._execution_communication.terminated()

    worker = execution._get_start_execution_worker()
    worker.__class__ = RedriveWorker
    worker.redrive_count = execution.redrive_count
    return worker


@contextlib.contextmanager
def emulate_redrive() -> Iterator[None]:
    """RedriveExecution in moto's API, and the redrive fields it reports."""
    from moto.core.responses import ActionResult
    from moto.stepfunctions.parser.backend.execution_worker import ExecutionWorker
    from moto.stepfunctions.responses import StepFunctionResponse

    def redrive_execution(self: Any) -> Any:
        execution = self.stepfunction_backend.describe_execution(self._get_param("executionArn"))
        return ActionResult({"redriveDate": redrive(execution)})

    original_describe = StepFunctionResponse.describe_execution

    def describe_execution(self: Any) -> Any:
        result = original_describe(self)
        execution = self.stepfunction_backend.describe_execution(self._get_param("executionArn"))
        count = getattr(execution, "redrive_count", 0)
        result.result["redriveCount"] = count
        if count:
            result.result["redriveDate"] = execution.redrive_date
        if execution.status in _REDRIVABLE:
            result.result["redriveStatus"] = "REDRIVABLE"
        if execution.status == "TIMED_OUT" and execution.stop_date:
            result.result["stopDate"] = execution.stop_date
        return result

    original_environment = ExecutionWorker._get_evaluation_environment

    def evaluation_environment(self: Any) -> Any:
        env = original_environment(self)
        # $$.Execution.RedriveCount, which AWS puts in every execution's context.
        env.states.context_object.context_object_data["Execution"]["RedriveCount"] = getattr(
            self, "redrive_count", 0
        )
        return env

    StepFunctionResponse.redrive_execution = redrive_execution  # type: ignore[attr-defined]
    StepFunctionResponse.describe_execution = describe_execution  # type: ignore[method-assign]
    ExecutionWorker._get_evaluation_environment = evaluation_environment  # type: ignore[method-assign]
    try:
        yield
    finally:
        del StepFunctionResponse.redrive_execution  # type: ignore[attr-defined]
        StepFunctionResponse.describe_execution = original_describe  # type: ignore[method-assign]
        ExecutionWorker._get_evaluation_environment = original_environment  # type: ignore[method-assign]
