"""Webhook delivery against a real receiver on 127.0.0.1, verified with standardwebhooks."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from standardwebhooks import Webhook, WebhookVerificationError

from functions.notify_webhook.webhook import COMPLETED, FAILED, deliver, message_id
from functions.shared.errors import ConfigurationError, WebhookDeliveryFailed, WebhookRejected
from functions.shared.signing import sign, signing_key
from tests.conftest import WEBHOOK_SECRET

PAYLOAD = {"event": "scan.completed", "verdict": "clean", "object": {"key": "a.txt"}}


def post(receiver, secret=WEBHOOK_SECRET, timeout_s=5.0):
    with requests.Session() as session:
        return deliver(session, receiver.url, PAYLOAD, "exec-1.completed", secret, timeout_s)


def test_a_signed_delivery_verifies_with_the_standard_library(webhook):
    webhook.secret = WEBHOOK_SECRET
    result = post(webhook)
    [request] = webhook.requests
    assert result["delivered"] is True
    assert request["verified"] == "ok"
    assert request["headers"]["webhook-id"] == "exec-1.completed"
    assert request["headers"]["webhook-signature"].startswith("v1,")
    assert json.loads(request["body"]) == PAYLOAD


def test_a_tampered_body_and_a_stale_timestamp_are_refused_by_the_library():
    key = signing_key(WEBHOOK_SECRET)
    body = json.dumps(PAYLOAD).encode()
    now = int(time.time())
    receiver = Webhook(WEBHOOK_SECRET)

    def headers(timestamp: int) -> dict[str, str]:
        return {
            "webhook-id": "m1",
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, "m1", timestamp, body),
        }

    assert receiver.verify(body, headers(now)) == PAYLOAD
    with pytest.raises(WebhookVerificationError, match="signature"):
        receiver.verify(body.replace(b"clean", b"CLEAN"), headers(now))
    stale = int((datetime.now(UTC) - timedelta(minutes=10)).timestamp())
    with pytest.raises(WebhookVerificationError, match="too old"):
        receiver.verify(body, headers(stale))


def test_completed_and_failed_notices_have_different_ids():
    ids = {
        message_id("exec-1", COMPLETED),
        message_id("exec-1", FAILED, 0),
        message_id("exec-1", FAILED, 1),  # after a redrive that failed again
        message_id("exec-1", COMPLETED, 1),  # the redrive that succeeded
    }
    assert len(ids) == 4


def test_a_secret_with_a_newline_or_without_padding_is_what_the_library_accepts():
    import base64

    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    assert signing_key(WEBHOOK_SECRET + "\n") == key
    assert signing_key(WEBHOOK_SECRET.rstrip("=")) == key


@pytest.mark.parametrize(
    ("secret", "complaint"),
    [
        ("s3cret", "whsec_"),
        ("whsec_not*base64", "base64"),
        ("whsec_c2hvcnQ=", "too short"),
    ],
)
def test_a_bad_secret_is_one_clear_error(secret, complaint):
    with pytest.raises(ConfigurationError, match=complaint):
        signing_key(secret)


def test_unsigned_when_there_is_no_secret(webhook):
    post(webhook, secret=None)
    [request] = webhook.requests
    assert "webhook-signature" not in {k.lower() for k in request["headers"]}


@pytest.mark.parametrize("status", [500, 503, 408, 429])
def test_server_errors_and_throttling_are_retried(webhook, status):
    webhook.answer(status)
    with pytest.raises(WebhookDeliveryFailed, match=str(status)):
        post(webhook)


def test_other_client_errors_are_permanent(webhook):
    webhook.answer(404)
    with pytest.raises(WebhookRejected, match="404"):
        post(webhook)


def test_a_receiver_that_does_not_answer_in_time_is_retried(webhook):
    webhook.delay_s = 1.0
    with pytest.raises(WebhookDeliveryFailed, match="did not answer"):
        post(webhook, timeout_s=0.2)
