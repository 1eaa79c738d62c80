"""Webhooks that are never lost: outbox dispatch, signed delivery, retries.

Entry points: `WebhookService` (start/stop/notify), `retry_delivery`,
`new_webhook_secret`, `RetryPolicy`, and the record names in `model`.
"""

from control.webhooks.model import (
    DELIVERIES,
    ENDPOINTS,
    FAILED,
    PENDING,
    SUCCEEDED,
    RetryPolicy,
    delivery_id,
    queue_for,
    rfc3339,
)
from control.webhooks.service import WebhookService
from control.webhooks.signing import new_webhook_secret, sign, verify, webhook_headers
from control.webhooks.worker import retry_delivery

__all__ = [
    "DELIVERIES",
    "ENDPOINTS",
    "FAILED",
    "PENDING",
    "SUCCEEDED",
    "RetryPolicy",
    "WebhookService",
    "delivery_id",
    "new_webhook_secret",
    "queue_for",
    "retry_delivery",
    "rfc3339",
    "sign",
    "verify",
    "webhook_headers",
]
