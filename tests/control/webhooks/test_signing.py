"""Standard Webhooks signing, checked against the independent `standardwebhooks` package."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from control.webhooks.signing import (
    SignatureError,
    new_webhook_secret,
    secret_key,
    verify,
    webhook_headers,
)

BODY = b'{"id":"ev_1","type":"live_stream.created","data":{"x":"\xc3\xa9"}}'


def test_new_secret_is_whsec_base64_of_24_bytes() -> None:
    s = new_webhook_secret()
    assert s.startswith("whsec_")
    assert len(base64.b64decode(s[6:])) == 24
    assert s != new_webhook_secret()
    assert secret_key(s) == base64.b64decode(s[6:])


def test_our_signature_verifies_with_standardwebhooks() -> None:
    secret = new_webhook_secret()
    headers = webhook_headers([secret], "ev_1", BODY)
    assert headers["webhook-signature"].startswith("v1,")
    Webhook(secret).verify(BODY, headers)


def test_standardwebhooks_signature_verifies_with_ours() -> None:
    secret = new_webhook_secret()
    now = int(time.time())
    sig = Webhook(secret).sign("msg_1", datetime.fromtimestamp(now, tz=UTC), BODY.decode())
    verify(
        secret,
        {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": sig},
        BODY,
    )


def test_rotation_signs_with_every_secret() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    headers = webhook_headers([new, old], "ev_2", BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, headers)
    Webhook(old).verify(BODY, headers)
    verify(old, headers, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(BODY, headers)


def test_tampering_and_stale_timestamps_are_rejected() -> None:
    secret = new_webhook_secret()
    headers = webhook_headers([secret], "ev_3", BODY)
    with pytest.raises(SignatureError):
        verify(secret, headers, BODY + b" ")
    with pytest.raises(SignatureError):
        verify(secret, {**headers, "webhook-id": "ev_4"}, BODY)
    old = webhook_headers([secret], "ev_3", BODY, timestamp=int(time.time()) - 3600)
    with pytest.raises(SignatureError):
        verify(secret, old, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, old)
    with pytest.raises(SignatureError):
        verify(secret, {}, BODY)
    with pytest.raises(SignatureError):
        webhook_headers([], "ev", BODY)
