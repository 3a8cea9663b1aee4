"""Fetch Definitions: read the cache manifest and say which definitions to load."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.fetch_definitions.logic import current_definitions
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
    ref = current_definitions(
        client("s3"),
        settings.require("definitions_bucket", "DEFINITIONS_BUCKET_NAME"),
        settings.definitions_prefix,
        settings.max_definitions_age_hours,
    )
    metrics.add_metric(name="DefinitionsAgeHours", unit=MetricUnit.Count, value=ref.age_hours or 0)
    if ref.stale:
        logger.warning("definitions are stale", extra={"definitions": ref.to_dict()})
        metrics.add_metric(name="StaleDefinitions", unit=MetricUnit.Count, value=1)
    return ref.to_dict()
