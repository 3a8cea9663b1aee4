"""Record Failure: a failed execution recorded, marked and announced, outside the workflow.

Not a state of the workflow: a failed execution stops at the Task that failed
(so the console's Redrive resumes there), and EventBridge invokes this with
the execution's status change; it also hears of a redriven execution that
succeeded, whose redrive may have resumed after Record Audit. In the Express
variant it is a state of the workflow after all (``Record Failure``): Express
keeps no history and emits no status change, so it reports itself. A schedule
invokes it with ``{"reconcile": {"hours": N}}`` to catch up on notices
EventBridge (best effort) never delivered. An error is retried by Lambda's
asynchronous invocation (twice) and then lands in the failure DLQ, where an
alarm watches.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.record_failure.failures import FailedExecution
from functions.record_failure.recorder import FailureRecorder, incomplete
from functions.shared.aws import client
from functions.shared.config import load_settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


def recorder() -> FailureRecorder:
    settings = load_settings()
    return FailureRecorder(
        sfn=client("stepfunctions"),
        s3=client("s3"),
        dynamodb=client("dynamodb"),
        lam=client("lambda"),
        table=settings.require("table_name", "DDB_TABLE_NAME"),
        notify_function=settings.notify_function,
        standard_state_machine_arn=settings.state_machine_arn,
        events=client("events"),
        event_bus=settings.event_bus,
        logs=client("logs") if settings.express_log_group else None,
    )


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if isinstance(event, dict) and "reconcile" in event:
        hours = float((event.get("reconcile") or {}).get("hours", 3))
        settings = load_settings()
        arn = settings.require("state_machine_arn", "STATE_MACHINE_ARN")
        reconciler = recorder()
        result = reconciler.reconcile(arn, dt.timedelta(hours=hours))
        if settings.express_log_group:
            # Express keeps no history: its failures are read from its log.
            express = reconciler.reconcile_express(
                settings.express_log_group, dt.timedelta(hours=hours)
            )
            result["express"] = express
            result["caughtUp"] += express["caughtUp"]
            result["failed"] |= express["failed"]
            if express["unreadable"]:
                metrics.add_metric(
                    name="UnreadableExpressFailures",
                    unit=MetricUnit.Count,
                    value=len(express["unreadable"]),
                )
        metrics.add_metric(
            name="UnrecordedEndingsCaughtUp", unit=MetricUnit.Count, value=len(result["caughtUp"])
        )
        metrics.add_metric(
            name="UnrecordedEndingsFailed", unit=MetricUnit.Count, value=len(result["failed"])
        )
        logger.info("reconciled", extra=result)
        failed_some = incomplete(result)
        if failed_some is not None:
            # After the others were recorded: Lambda retries the run, and the
            # errors metric and the failure DLQ show what is still missing.
            raise failed_some
        return result
    if isinstance(event, dict) and event.get("workflow") == "EXPRESS":
        failed = FailedExecution.from_express(event)  # the Express variant's own catch
    else:
        failed = FailedExecution.from_event(event)
    result = recorder().record(failed)
    if "ignored" in result:
        logger.info("out-of-date notice ignored", extra={"why": result["ignored"]})
    elif not failed.succeeded:
        logger.warning("execution failed", extra={"execution": failed.execution.arn, **result})
        metrics.add_metric(name="ScanFailures", unit=MetricUnit.Count, value=1)
    return result
