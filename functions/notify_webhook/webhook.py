"""POST the scan result to the configured webhook.

Body: the same summary the audit item is built from (``result_summary``),
plus ``event`` (``scan.completed`` or ``scan.failed``). With a secret, the
request carries ``X-Scan-Timestamp`` and ``X-Scan-Signature:
sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``, so a receiver can check
both origin and freshness. ``X-Scan-Delivery`` is the execution name: the same
for every retry of one delivery, so receivers can de-duplicate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import requests

from functions.shared.contracts import ExecutionRef, result_summary
from functions.shared.errors import WebhookDeliveryFailed, WebhookRejected

USER_AGENT = "s3-virus-scanner-webhook/1"
RETRYABLE_STATUS = {408, 429}


def build_payload(state: dict[str, Any], execution: ExecutionRef) -> dict[str, Any]:
    summary = result_summary(state, execution)
    summary["event"] = "scan.failed" if summary["failed"] else "scan.completed"
    return summary


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def deliver(
    session: requests.Session,
    url: str,
    payload: dict[str, Any],
    delivery_id: str,
    secret: str | None,
    timeout_s: float,
) -> dict[str, Any]:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Scan-Delivery": delivery_id,
        "X-Scan-Timestamp": timestamp,
    }
    if secret:
        headers["X-Scan-Signature"] = sign(secret, timestamp, body)
    started = time.monotonic()
    try:
        response = session.post(
            url, data=body, headers=headers, timeout=timeout_s, allow_redirects=False
        )
    except requests.Timeout as err:
        raise WebhookDeliveryFailed(f"webhook did not answer within {timeout_s}s") from err
    except requests.RequestException as err:
        raise WebhookDeliveryFailed(f"webhook unreachable: {type(err).__name__}") from err
    status = response.status_code
    if 200 <= status < 300:
        return {
            "delivered": True,
            "status": status,
            "durationMs": int((time.monotonic() - started) * 1000),
        }
    if status >= 500 or status in RETRYABLE_STATUS:
        raise WebhookDeliveryFailed(f"webhook answered {status}")
    raise WebhookRejected(f"webhook answered {status}; not retried")
