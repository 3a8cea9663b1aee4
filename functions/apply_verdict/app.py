"""Tag Clean / Quarantine or Delete / Tag Unscannable: act on the verdict."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.apply_verdict.actions import VerdictApplier
from functions.shared.aws import client
from functions.shared.config import load_settings
from functions.shared.contracts import ObjectRef, ScanResult
from functions.shared.holds import HoldStore

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    scan = ScanResult.from_dict(event.get("scan"))
    obj = scan.applies_to(ObjectRef.from_dict(event.get("object")))
    settings = load_settings()
    holds = HoldStore(client("dynamodb"), settings.require("table_name", "DDB_TABLE_NAME"))
    applier = VerdictApplier(client("s3"), settings.quarantine_bucket, holds)
    action = applier.apply(obj, scan, found_by=str(event.get("execution") or ""))
    logger.info("verdict applied", extra={"object": obj.uri, "action": action})
    metrics.add_metric(name=f"Action_{action['action']}", unit=MetricUnit.Count, value=1)
    if action.get("held"):
        metrics.add_metric(name="HeldInfected", unit=MetricUnit.Count, value=1)
    if action.get("tagsDropped"):
        logger.warning("tag limit reached", extra={"dropped": action["tagsDropped"]})
    return action
