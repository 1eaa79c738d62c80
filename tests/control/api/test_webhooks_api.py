"""Webhook endpoints over the API: secrets shown once, rotation keeps the old
secret valid for 24 h, the delivery log, manual retry — with a real receiver
verifying signatures with the independent `standardwebhooks` package."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook

from tests.control.api.conftest import Api, MakeApi


class Receiver:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        self.arrived.set()
        return web.Response(status=self.status)

    @property
    def url(self) -> str:
        return str(self.server.make_url("/hook"))

    async def wait_for(self, n: int, within_s: float = 10.0) -> None:
        deadline = time.monotonic() + within_s
        while len(self.requests) < n:
            assert time.monotonic() < deadline, f"only {len(self.requests)} of {n} arrived"
            await asyncio.sleep(0.02)


async def test_endpoint_crud_and_secret_shown_once(api: Api) -> None:
    status, ep, _ = await api.call(
        "POST",
        "/v1/webhook-endpoints",
        json={"url": "https://example.test/h", "events": ["live_stream.*"]},
    )
    assert status == 201
    assert ep["secret"].startswith("whsec_")
    assert ep["events"] == ["live_stream.*"] and ep["status"] == "enabled"
    _, got, _ = await api.call("GET", f"/v1/webhook-endpoints/{ep['id']}")
    assert "secret" not in got
    _, page, _ = await api.call("GET", "/v1/webhook-endpoints")
    assert [e["id"] for e in page["data"]] == [ep["id"]] and "secret" not in page["data"][0]
    status, patched, _ = await api.call(
        "PATCH", f"/v1/webhook-endpoints/{ep['id']}", json={"status": "disabled"}
    )
    assert status == 200 and patched["status"] == "disabled"
    assert (await api.call("DELETE", f"/v1/webhook-endpoints/{ep['id']}"))[0] == 204
    assert (await api.call("GET", f"/v1/webhook-endpoints/{ep['id']}"))[0] == 404


async def test_bad_urls_and_event_names_are_422(api: Api) -> None:
    for body, param in [
        ({"url": "ftp://example.test/x"}, "url"),
        ({"url": "not a url at all"}, "url"),
        ({"url": "https://example.test/h", "events": ["LIVE!"]}, "events[0]"),
        ({"events": ["*"]}, "url"),
    ]:
        status, err, _ = await api.call("POST", "/v1/webhook-endpoints", json=body)
        assert status == 422 and err["error"]["param"] == param, body


async def test_events_are_delivered_signed_and_logged(make_api: MakeApi) -> None:
    api = await make_api(webhook_backoff_base_s=0.2, webhook_backoff_jitter=0.0)
    receiver = Receiver()
    await receiver.server.start_server()
    try:
        _, ep, _ = await api.call("POST", "/v1/webhook-endpoints", json={"url": receiver.url})
        _, ls, _ = await api.call("POST", "/v1/live-streams", json={"passthrough": "p1"})
        await receiver.wait_for(1)
        headers, body = receiver.requests[0]
        payload: Any = Webhook(ep["secret"]).verify(body, headers)
        assert payload["type"] == "live_stream.created"
        assert payload["data"]["id"] == ls["id"] and payload["data"]["passthrough"] == "p1"
        assert payload["sequence"] == 1

        deadline = time.monotonic() + 5
        while True:
            _, log, _ = await api.call("GET", f"/v1/webhook-endpoints/{ep['id']}/deliveries")
            if log["data"] and log["data"][0]["status"] == "succeeded":
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        delivery = log["data"][0]
        assert delivery["event_type"] == "live_stream.created"
        assert delivery["attempt_count"] == 1 and delivery["last_status_code"] == 200

        status, retried, _ = await api.call(
            "POST", f"/v1/webhook-deliveries/{delivery['id']}/retry"
        )
        assert status == 202 and retried["status"] == "pending"
        await receiver.wait_for(2)
        _, body2 = receiver.requests[1]
        assert json.loads(body2)["id"] == payload["id"]  # same event, same webhook-id

        assert (await api.call("POST", "/v1/webhook-deliveries/wd_nope/retry"))[0] == 404
    finally:
        await receiver.server.close()


async def test_rotation_signs_with_both_secrets(make_api: MakeApi) -> None:
    api = await make_api()
    receiver = Receiver()
    await receiver.server.start_server()
    try:
        _, ep, _ = await api.call("POST", "/v1/webhook-endpoints", json={"url": receiver.url})
        status, rotated, _ = await api.call(
            "POST", f"/v1/webhook-endpoints/{ep['id']}/rotate-secret"
        )
        assert status == 200 and rotated["secret"] != ep["secret"]
        rec = await api.store.get("webhook_endpoints", ep["id"])
        assert rec is not None and rec.data["previous_secret"] == ep["secret"]
        assert rec.data["previous_secret_expires_at"] > time.time() + 23.9 * 3600
        await api.call("POST", "/v1/live-streams", json={})
        await receiver.wait_for(1)
        headers, body = receiver.requests[0]
        Webhook(ep["secret"]).verify(body, headers)
        Webhook(rotated["secret"]).verify(body, headers)
    finally:
        await receiver.server.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/h",
        "http://[::1]/h",
        "http://10.0.0.1/h",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/h",
        "http://[::ffff:10.0.0.1]/h",
    ],
)
async def test_private_destinations_are_refused(make_api: MakeApi, url: str) -> None:
    api = await make_api(webhook_allow_private=False)
    status, err, _ = await api.call("POST", "/v1/webhook-endpoints", json={"url": url})
    assert status == 422 and err["error"]["type"] == "destination_refused"
    assert err["error"]["param"] == "url"
    _, ep, _ = await api.call(
        "POST", "/v1/webhook-endpoints", json={"url": "https://hooks.example.test/h"}
    )
    status, err, _ = await api.call("PATCH", f"/v1/webhook-endpoints/{ep['id']}", json={"url": url})
    assert status == 422 and err["error"]["type"] == "destination_refused"


async def test_private_destinations_are_refused_at_every_attempt(make_api: MakeApi) -> None:
    """An endpoint stored while private receivers were allowed (or by an older
    version) is refused when delivering; the log says only the class."""
    from control.store.base import Put
    from control.webhooks import new_webhook_secret
    from control.webhooks.model import ENDPOINTS

    receiver = Receiver()
    await receiver.server.start_server()
    try:
        api = await make_api(webhook_allow_private=False, webhook_backoff_base_s=60)
        await api.store.commit(
            [
                Put(
                    ENDPOINTS,
                    "we_old",
                    {"url": receiver.url, "events": [], "secret": new_webhook_secret()},
                )
            ]
        )
        await api.call("POST", "/v1/live-streams", json={})
        deadline = time.monotonic() + 10
        while True:
            _, log, _ = await api.call("GET", "/v1/webhook-endpoints/we_old/deliveries")
            if log["data"] and log["data"][0]["attempts"]:
                break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        attempt = log["data"][0]["attempts"][0]
        assert attempt["error"] == "destination_refused" and attempt["status_code"] is None
        assert receiver.requests == []
    finally:
        await receiver.server.close()
