"""Record Audit / Record Failure: write the execution's story to the audit table."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.record_audit.audit import build_item, write_item
from functions.shared.aws import client
from functions.shared.config import load_settings
from functions.shared.contracts import result_summary, state_event
from functions.shared.results_bus import publish

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state, execution = state_event(event)
    item = build_item(state, execution)
    settings = load_settings()
    table = settings.require("table_name", "DDB_TABLE_NAME")
    key = write_item(client("dynamodb"), table, item)
    # After the item: a rule on the bus never sees a result the table does not hold.
    publish(client("events"), settings.event_bus, result_summary(state, execution))
    logger.info("audit recorded", extra={"key": key, "verdict": item["verdict"]})
    if "error" in item:
        metrics.add_metric(name="ScanFailures", unit=MetricUnit.Count, value=1)
    return key
