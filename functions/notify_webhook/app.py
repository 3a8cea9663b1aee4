"""Notify Webhook: POST the result as JSON."""

from __future__ import annotations

from typing import Any

import requests
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from functions.notify_webhook.webhook import build_payload, deliver
from functions.shared.aws import client
from functions.shared.config import Settings, load_settings
from functions.shared.contracts import state_event
from functions.shared.errors import WebhookDeliveryFailed

logger = Logger()
tracer = Tracer()
metrics = Metrics()

# Reused across warm invocations: keeps the TLS connection to the receiver alive.
_session = requests.Session()
_secret_cache: dict[str, str] = {}


def signing_secret(settings: Settings) -> str | None:
    """WEBHOOK_SECRET (local runs), or the Secrets Manager secret, read once."""
    if settings.webhook_secret or not settings.webhook_secret_arn:
        return settings.webhook_secret
    arn = settings.webhook_secret_arn
    if arn not in _secret_cache:
        try:
            value = client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        except (ClientError, KeyError) as err:
            raise WebhookDeliveryFailed(f"cannot read the webhook secret {arn}: {err}") from err
        _secret_cache[arn] = value
    return _secret_cache[arn]


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    state, execution = state_event(event)
    settings = load_settings()
    url = settings.require("webhook_url", "WEBHOOK_URL")
    result = deliver(
        _session,
        url,
        build_payload(state, execution),
        delivery_id=execution.name,
        secret=signing_secret(settings),
        timeout_s=settings.webhook_timeout_s,
    )
    metrics.add_metric(name="WebhookDelivered", unit=MetricUnit.Count, value=1)
    return result
