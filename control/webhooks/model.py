"""Webhook data model shared by the dispatcher, the worker and the API.

Records (all in the Store):

* ``webhook_endpoints``/<id> — written by the API: ``url``, ``events`` (list of
  types, ``"prefix.*"`` or ``"*"``; empty = all), ``secret`` (``whsec_…``),
  ``status`` (anything but ``"disabled"`` is enabled), and after rotation
  ``previous_secret`` + ``previous_secret_expires_at`` (unix seconds or RFC 3339).
* ``webhook_deliveries``/<id> — written here; id derived from (event id,
  endpoint id) so a replay never duplicates; tag ``endpoint_id``. Fields: see
  `new_delivery`.
* ``webhook_state``/``dispatcher`` — the dispatcher's durable cursor.

Queue: one leased queue per endpoint, ``webhooks:<endpoint_id>``, task id = the
delivery id (manual retries of a still-pending delivery add a one-shot task
``<delivery id>~m<n>``). Per-endpoint queues are what keep one slow or dead
endpoint from delaying another.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from control.domain.records import Collection
from control.domain.webhook_endpoints import ENDPOINT_RECORDS
from control.store.base import Event, Record

ENDPOINTS = ENDPOINT_RECORDS.name
DELIVERY_RECORDS = Collection(
    "webhook_deliveries",
    tags=lambda d: {"endpoint_id": str(d["endpoint_id"])} if "endpoint_id" in d else {},
)
"""One per (event, endpoint); listed by endpoint."""
DELIVERIES = DELIVERY_RECORDS.name
STATE = "webhook_state"
CURSOR_ID = "dispatcher"
QUEUE_PREFIX = "webhooks"
DISPATCHER_LEASE = "webhooks:dispatcher"
MAX_LOGGED_ATTEMPTS = 100

PENDING = "pending"
SUCCEEDED = "succeeded"
FAILED = "failed"


def queue_for(endpoint_id: str) -> str:
    return f"{QUEUE_PREFIX}:{endpoint_id}"


def delivery_id(event_id: str, endpoint_id: str) -> str:
    """Deterministic: the same (event, endpoint) always maps to the same delivery."""
    return "wd_" + hashlib.sha256(f"{event_id}\x00{endpoint_id}".encode()).hexdigest()[:32]


def rfc3339(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def parse_time(value: Any) -> float | None:
    """Unix seconds from a number or an RFC 3339 string (None if absent/invalid)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def event_body(event: Event) -> dict[str, Any]:
    """The JSON body POSTed to endpoints."""
    return {
        "id": event.id,
        "type": event.type,
        "created_at": rfc3339(event.created_at),
        "sequence": event.sequence,
        "data": event.data,
    }


def endpoint_enabled(endpoint: Record) -> bool:
    return endpoint.data.get("status") != "disabled"


def endpoint_wants(endpoint: Record, event: Event) -> bool:
    """Enabled, subscribed to this type, and existed when the event happened."""
    if not endpoint_enabled(endpoint) or not endpoint.data.get("url"):
        return False
    if event.created_at < endpoint.created_at:
        return False
    wanted = endpoint.data.get("events") or []
    if not wanted:
        return True
    for pattern in wanted:
        if pattern == "*" or pattern == event.type:
            return True
        if (
            isinstance(pattern, str)
            and pattern.endswith(".*")
            and event.type.startswith(pattern[:-1])
        ):
            return True
    return False


def endpoint_secrets(endpoint: Record, now: float) -> list[str]:
    """Secrets to sign with: the current one, plus the previous one until it expires."""
    out = [s for s in [endpoint.data.get("secret")] if isinstance(s, str) and s]
    prev = endpoint.data.get("previous_secret")
    if isinstance(prev, str) and prev:
        expires = parse_time(endpoint.data.get("previous_secret_expires_at"))
        if expires is None or expires > now:
            out.append(prev)
    return out


def new_delivery(event: Event, endpoint: Record, now: float) -> dict[str, Any]:
    return {
        "endpoint_id": endpoint.id,
        "event_id": event.id,
        "event_type": event.type,
        "payload": event_body(event),
        "status": PENDING,
        "attempt_count": 0,
        "attempts": [],
        "first_attempt_at": None,
        "window_start": None,
        "next_attempt_at": now,
        "last_status_code": None,
        "last_error": None,
        "completed_at": None,
        "manual_retries": 0,
        "updated_at": now,
    }


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, retried for at least `retry_for_s`.

    The n-th retry (n ≥ 1) waits ``cap(n) = min(max_s, base_s * factor**(n-1))``
    (or ``schedule[n-1]``, the last entry repeating, when a schedule is given)
    scaled by ``1 - jitter * U[0,1)``: jitter=1 is "full jitter" (uniform in
    (0, cap]), jitter=0 is the exact schedule. A delivery fails for good once
    `retry_for_s` has elapsed since its first attempt (or after `max_attempts`).
    """

    base_s: float = 5.0
    max_s: float = 3600.0
    factor: float = 2.0
    jitter: float = 1.0
    retry_for_s: float = 25 * 3600.0
    max_attempts: int | None = None
    schedule: tuple[float, ...] | None = None

    def cap(self, retry_number: int) -> float:
        n = max(1, retry_number)
        if self.schedule:
            return float(self.schedule[min(n, len(self.schedule)) - 1])
        exp = min(n - 1, 1000)
        try:
            value = self.base_s * math.pow(self.factor, exp)
        except OverflowError:
            value = math.inf
        return min(self.max_s, value)

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        r = (rng or random).random()
        return self.cap(retry_number) * (1.0 - self.jitter * r)
