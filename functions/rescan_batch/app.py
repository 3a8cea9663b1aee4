"""Rescan Batch: one batch of the Rescan state machine's listing, selected and queued."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.rescan_batch.selection import Request, Selector
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
    request = Request.from_dict(event.get("BatchInput"))
    selector = Selector(
        client("s3"),
        client("sqs"),
        settings.require("scan_queue_url", "SCAN_QUEUE_URL"),
        settings.require("source_bucket", "SOURCE_BUCKET_NAME"),
        client("dynamodb"),
        settings.require("table_name", "DDB_TABLE_NAME"),
    )
    outcome = selector.run(request, list(event.get("Items") or []))
    metrics.add_metric(name="RescanQueued", unit=MetricUnit.Count, value=outcome.queued)
    if outcome.tags_trusted is False:
        logger.warning(
            "the source bucket has no access gate, so its scan-* tags may be forged: "
            f"mode {request.mode} rescanned every listed object"
        )
    logger.info("batch queued", extra={"runId": request.run_id, **outcome.to_dict()})
    return outcome.to_dict()
