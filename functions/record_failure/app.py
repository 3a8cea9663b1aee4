"""Record Failure: EventBridge's notice of a failed execution, recorded and announced.

Not a state of the workflow: a failed execution stops at the Task that failed
(so the console's Redrive resumes there), and EventBridge invokes this with
the execution's status change. It also hears of a redriven execution that
succeeded, whose redrive may have resumed after Record Audit: the audit item
then gets the execution's final story. An error here is retried by Lambda's
asynchronous invocation (twice) and then lands in the failure DLQ, where an
alarm watches.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.apply_verdict.actions import VerdictApplier
from functions.record_audit.audit import build_item, write_item
from functions.record_failure.failures import (
    FailedExecution,
    failure_state,
    final_state,
    mark_object,
    notify,
    reached_state,
)
from functions.shared.aws import client
from functions.shared.config import load_settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = load_settings()
    failed = FailedExecution.from_event(event)
    table = settings.require("table_name", "DDB_TABLE_NAME")
    if failed.succeeded:
        # The redrive fixed it: the item tells the final outcome, failure fields gone.
        item = build_item(final_state(client("stepfunctions"), failed), failed.execution)
        key = write_item(client("dynamodb"), table, item, unless_newer=True)
        logger.info("redriven execution succeeded", extra={"audit": key})
        return {"audit": key}
    failed_state, reached = reached_state(client("stepfunctions"), failed)
    state = failure_state(failed, reached)
    marking = mark_object(VerdictApplier(client("s3"), None), state, failed.error)

    item = build_item(state, failed.execution) | {
        "failedState": failed_state,
        "executionStatus": failed.status,
        "objectMarking": marking,
    }
    key = write_item(client("dynamodb"), table, item, unless_newer=True)
    logger.warning(
        "execution failed",
        extra={
            "execution": failed.execution.arn,
            "status": failed.status,
            "error": failed.error,
            "failedState": failed_state,
            "marking": marking,
            "audit": key,
        },
    )
    metrics.add_metric(name="ScanFailures", unit=MetricUnit.Count, value=1)

    notification = None
    webhook_failed = failed.error.startswith("Webhook")
    if settings.notify_function and not webhook_failed and "superseded" not in key:
        notification = notify(client("lambda"), settings.notify_function, state, failed.execution)
    return {"audit": key, "marking": marking, "notification": notification}
