"""Webhook endpoints: where events go, and the secret that signs them.

Collection ``webhook_endpoints``, data ``{url, events, description, status,
secret, previous_secret, previous_secret_expires_at, secret_rotated_at}``.
The secret is shown at creation and on rotation only; after a rotation the
previous one still signs deliveries for `ROTATION_GRACE_S`. A URL must be an
absolute http(s) URL and, unless private receivers are allowed, resolve to
public addresses only (`check_destination`, given by the node: the delivery
worker checks again on every attempt, on the address it connects to).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from control.domain.api_keys import rfc3339
from control.domain.errors import InvalidInput, NotFoundError
from control.domain.records import Collection
from control.ids import new_id
from control.outbox import Change, Outbox
from control.store.base import Record

ENDPOINT_RECORDS = Collection("webhook_endpoints")
ENDPOINTS = ENDPOINT_RECORDS.name
ROTATION_GRACE_S = 24 * 3600.0

CheckDestination = Callable[[str], Awaitable[str | None]]
"""Why a URL may not receive webhooks (None: it may)."""


class DestinationRefused(InvalidInput):
    """The URL resolves to an address webhooks may not go to."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"Webhooks go to public addresses only: {why} "
            "(set ONAIR_WEBHOOK_ALLOW_PRIVATE=true for receivers inside your network)",
            param="url",
            error_type="destination_refused",
        )


def endpoint_view(r: Record, *, secret: bool = False) -> dict[str, Any]:
    d = r.data
    out: dict[str, Any] = {
        "id": r.id,
        "object": "webhook_endpoint",
        "url": d["url"],
        "events": list(d.get("events") or []),
        "description": d.get("description"),
        "status": d.get("status", "enabled"),
        "created_at": rfc3339(r.created_at),
        "secret_rotated_at": rfc3339(d.get("secret_rotated_at")),
    }
    if secret:
        out["secret"] = d["secret"]
    return out


def check_url_form(url: str) -> str:
    """An absolute http(s) URL with a host and a usable port, or `InvalidInput`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("url is not a valid URL", param="url") from None
    if port == 0:
        raise InvalidInput("url has an invalid port", param="url")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an absolute http(s) URL", param="url")
    return url


class WebhookEndpoints:
    def __init__(
        self,
        outbox: Outbox,
        *,
        new_secret: Callable[[], str],
        check_destination: CheckDestination | None,
    ) -> None:
        """`check_destination` None: private receivers are allowed."""
        self.outbox = outbox
        self.store = outbox.store
        self._new_secret = new_secret
        self._check_destination = check_destination

    async def check_url(self, url: str) -> str:
        check_url_form(url)
        if self._check_destination is not None:
            why = await self._check_destination(url)
            if why is not None:
                raise DestinationRefused(why)
        return url

    async def create(
        self, *, url: str, events: list[str], description: str | None, status: str
    ) -> Record:
        endpoint_id = new_id("we")
        data: dict[str, Any] = {
            "url": await self.check_url(url),
            "events": events,
            "description": description,
            "status": status,
            "secret": self._new_secret(),
            "previous_secret": None,
            "previous_secret_expires_at": None,
            "secret_rotated_at": None,
        }
        await self.outbox.commit([ENDPOINT_RECORDS.put(endpoint_id, data)])
        return await self.get(endpoint_id)

    async def get(self, endpoint_id: str) -> Record:
        rec = await self.store.get(ENDPOINTS, endpoint_id)
        if rec is None:
            raise NotFoundError("webhook endpoint", endpoint_id)
        return rec

    async def update(self, endpoint_id: str, fields: dict[str, Any]) -> Record:
        if "url" in fields:
            await self.check_url(fields["url"])
        return await self._modify(endpoint_id, lambda d: d.update(fields))

    async def rotate_secret(self, endpoint_id: str) -> Record:
        def change(d: dict[str, Any]) -> None:
            now = time.time()
            d["previous_secret"] = d["secret"]
            d["previous_secret_expires_at"] = now + ROTATION_GRACE_S
            d["secret"] = self._new_secret()
            d["secret_rotated_at"] = now

        return await self._modify(endpoint_id, change)

    async def delete(self, endpoint_id: str) -> None:
        rec = await self.get(endpoint_id)
        await self.outbox.commit([ENDPOINT_RECORDS.delete(rec.id)])

    async def _modify(self, endpoint_id: str, change: Callable[[dict[str, Any]], None]) -> Record:
        async def attempt() -> Change[None]:
            rec = await self.get(endpoint_id)
            data = dict(rec.data)
            change(data)
            return Change(None, [ENDPOINT_RECORDS.put(rec.id, data, expect_version=rec.version)])

        await self.outbox.compare_and_set(attempt, what=f"webhook endpoint {endpoint_id}")
        return await self.get(endpoint_id)
