"""Notify Webhook: POST the result as JSON."""

from __future__ import annotations

import time
from typing import Any

import requests
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from functions.notify_webhook.webhook import build_payload, deliver, message_id, release_payload
from functions.shared.aws import client
from functions.shared.config import Settings, load_settings
from functions.shared.contracts import state_event
from functions.shared.errors import WebhookDeliveryFailed

logger = Logger()
tracer = Tracer()
metrics = Metrics()

# Reused across warm invocations: keeps the TLS connection to the receiver alive.
_session = requests.Session()
# (value, fetched at): re-read after a while so a rotated secret takes effect.
_secret_cache: dict[str, tuple[str, float]] = {}
SECRET_TTL_S = 900.0


def signing_secret(settings: Settings) -> str | None:
    """WEBHOOK_SECRET (local runs), or the Secrets Manager secret, re-read after a while."""
    if settings.webhook_secret or not settings.webhook_secret_arn:
        return settings.webhook_secret
    arn = settings.webhook_secret_arn
    cached = _secret_cache.get(arn)
    if cached is None or time.monotonic() - cached[1] > SECRET_TTL_S:
        try:
            value = client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        except (ClientError, KeyError) as err:
            raise WebhookDeliveryFailed(f"cannot read the webhook secret {arn}: {err}") from err
        cached = _secret_cache[arn] = (value, time.monotonic())
    return cached[0]


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if isinstance(event, dict) and "release" in event:
        # `scanctl release`: a version held infected released by an operator.
        payload, msg_id = release_payload(event["release"])
    else:
        state, execution = state_event(event)
        payload = build_payload(state, execution)
        msg_id = message_id(execution.name, payload["event"], execution.redrive_count)
    settings = load_settings()
    url = settings.require("webhook_url", "WEBHOOK_URL")
    result = deliver(
        _session,
        url,
        payload,
        msg_id=msg_id,
        secret=signing_secret(settings),
        timeout_s=settings.webhook_timeout_s,
    )
    metrics.add_metric(name="WebhookDelivered", unit=MetricUnit.Count, value=1)
    return result
