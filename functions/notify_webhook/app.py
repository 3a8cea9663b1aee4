"""Notify Webhook: POST the result as JSON."""

from __future__ import annotations

from typing import Any

import requests
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.notify_webhook.webhook import build_payload, deliver
from functions.shared.config import load_settings
from functions.shared.contracts import ExecutionRef
from functions.shared.errors import InvalidInput

logger = Logger()
tracer = Tracer()
metrics = Metrics()

# Reused across warm invocations: keeps the TLS connection to the receiver alive.
_session = requests.Session()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state = event.get("state")
    if not isinstance(state, dict):
        raise InvalidInput("state must be the execution state object")
    execution = ExecutionRef.from_dict(event.get("execution"))
    settings = load_settings()
    url = settings.require("webhook_url", "WEBHOOK_URL")
    result = deliver(
        _session,
        url,
        build_payload(state, execution),
        delivery_id=execution.name,
        secret=settings.webhook_secret,
        timeout_s=settings.webhook_timeout_s,
    )
    metrics.add_metric(name="WebhookDelivered", unit=MetricUnit.Count, value=1)
    return result
