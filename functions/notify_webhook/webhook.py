"""POST the scan result to the configured webhook, signed as Standard Webhooks specifies.

Body: the same summary the audit item is built from (``result_summary``),
plus ``event`` (``scan.completed`` or ``scan.failed``); or, when an operator
releases a version held infected (``scanctl release``), the release's detail
with ``event: object.released``.

Headers (https://www.standardwebhooks.com, so receivers verify with the
``standardwebhooks`` library that exists for every common language):

- ``webhook-id``: the message id. The same for every retry of one message
  (receivers de-duplicate on it), different between the completed and the
  failed notice of one execution, and between the notices of its redrives.
- ``webhook-timestamp``: seconds since the epoch; receivers refuse stale ones.
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``
  with the key decoded from the ``whsec_<base64>`` secret (only with a secret).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import requests

from functions.shared.contracts import ExecutionRef, result_summary
from functions.shared.errors import InvalidInput, WebhookDeliveryFailed, WebhookRejected
from functions.shared.signing import sign, signing_key

USER_AGENT = "s3-virus-scanner-webhook/2"
RETRYABLE_STATUS = {408, 429}
COMPLETED = "scan.completed"
FAILED = "scan.failed"
RELEASED = "object.released"


def build_payload(state: dict[str, Any], execution: ExecutionRef) -> dict[str, Any]:
    summary = result_summary(state, execution)
    summary["event"] = FAILED if summary["failed"] else COMPLETED
    return summary


def release_payload(detail: Any) -> tuple[dict[str, Any], str]:
    """The ``object.released`` body, and its message id (one per release)."""
    if not isinstance(detail, dict) or not detail.get("releasedAt") or not detail.get("key"):
        raise InvalidInput("release must carry the released object and releasedAt")
    payload = {**detail, "event": RELEASED}
    identity = detail.get("versionId") or detail.get("eTag") or ""
    digest = hashlib.sha256(
        "\0".join([str(detail.get("bucket")), str(detail["key"]), str(identity)]).encode()
    ).hexdigest()[:16]
    return payload, f"release.{digest}.{detail['releasedAt']}"


def message_id(execution_name: str, event: str, redrive_count: int = 0) -> str:
    """Stable per message: retries share it, distinct notices do not.

    The redrive count is part of it: a redrive's notice is a new message, even
    when an earlier attempt's delivery timed out half-way.
    """
    return f"{execution_name}.{event.removeprefix('scan.')}.{redrive_count}"


def deliver(
    session: requests.Session,
    url: str,
    payload: dict[str, Any],
    msg_id: str,
    secret: str | None,
    timeout_s: float,
) -> dict[str, Any]:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
    }
    if secret:
        headers["webhook-signature"] = sign(signing_key(secret), msg_id, timestamp, body)
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
            "messageId": msg_id,
            "durationMs": int((time.monotonic() - started) * 1000),
        }
    if status >= 500 or status in RETRYABLE_STATUS:
        raise WebhookDeliveryFailed(f"webhook answered {status}")
    raise WebhookRejected(f"webhook answered {status}; not retried")
