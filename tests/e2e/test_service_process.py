"""`onair serve` as a real process: webhooks survive SIGKILL (delivered exactly
once after restart, signatures checked with the independent `standardwebhooks`
package), failed deliveries retry on the configured backoff, and SIGTERM shuts
down gracefully even with an event stream open."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.control.api.service_process import ServiceProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


class Receiver:
    """A webhook receiver on a chosen port; verifies every request's signature."""

    def __init__(self, port: int, secret: str, status: int = 200) -> None:
        self.port = port
        self.webhook = Webhook(secret)
        self.status = status
        self.received: list[tuple[float, str, dict[str, Any]]] = []
        self.bad_signatures = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = self.webhook.verify(body, dict(request.headers))
        except Exception:
            self.bad_signatures += 1
            return web.Response(status=400)
        self.received.append((time.monotonic(), request.headers["webhook-id"], payload))
        return web.Response(status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def wait_for(self, n: int, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while len(self.received) < n:
            assert time.monotonic() < deadline, f"{len(self.received)} of {n} webhooks arrived"
            await asyncio.sleep(0.02)


async def api(svc: ServiceProcess, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as s:
        async with s.request(
            method,
            svc.url + path,
            json=body,
            headers={"Authorization": f"Bearer {svc.admin_key}"},
        ) as r:
            assert r.status < 300, (r.status, await r.text())
            return await r.json() if r.content_type == "application/json" else None


async def test_event_survives_sigkill_and_arrives_exactly_once(tmp_path: Path) -> None:
    svc = ServiceProcess(
        tmp_path / "data",
        {
            "ONAIR_WEBHOOK_BACKOFF_BASE_S": "0.3",
            "ONAIR_WEBHOOK_BACKOFF_MAX_S": "0.6",
            "ONAIR_WEBHOOK_BACKOFF_JITTER": "0",
        },
    )
    hook_port = free_port()  # nobody listens here yet
    receiver: Receiver | None = None
    try:
        await asyncio.to_thread(svc.start)
        assert svc.admin_key
        endpoint = await api(
            svc, "POST", "/v1/webhook-endpoints", {"url": f"http://127.0.0.1:{hook_port}/hook"}
        )
        stream = await api(svc, "POST", "/v1/live-streams", {"name": "survivor"})
        svc.kill()  # SIGKILL: between the state change and any successful delivery

        receiver = Receiver(hook_port, endpoint["secret"])
        await receiver.start()
        first_key, svc.admin_key = svc.admin_key, None
        await asyncio.to_thread(svc.start)
        assert svc.admin_key is None  # the second start creates no new admin key
        svc.admin_key = first_key
        await receiver.wait_for(1, within_s=30)
        await asyncio.sleep(2.0)  # anything duplicated would have arrived by now

        assert receiver.bad_signatures == 0
        assert len(receiver.received) == 1
        _, webhook_id, payload = receiver.received[0]
        assert payload["type"] == "live_stream.created"
        assert payload["data"]["id"] == stream["id"]
        assert payload["id"] == webhook_id
        log = await api(svc, "GET", f"/v1/webhook-endpoints/{endpoint['id']}/deliveries")
        assert [d["status"] for d in log["data"]] == ["succeeded"]
        assert svc.stop() == 0
    finally:
        svc.kill()
        if receiver is not None:
            await receiver.stop()


async def test_failing_receiver_sees_retries_on_the_backoff_schedule(tmp_path: Path) -> None:
    base = 0.4
    svc = ServiceProcess(
        tmp_path / "data",
        {
            "ONAIR_WEBHOOK_BACKOFF_BASE_S": str(base),
            "ONAIR_WEBHOOK_BACKOFF_MAX_S": "60",
            "ONAIR_WEBHOOK_BACKOFF_JITTER": "0",
        },
    )
    receiver: Receiver | None = None
    try:
        await asyncio.to_thread(svc.start)
        port = free_port()
        endpoint = await api(
            svc, "POST", "/v1/webhook-endpoints", {"url": f"http://127.0.0.1:{port}/hook"}
        )
        receiver = Receiver(port, endpoint["secret"], status=500)
        await receiver.start()
        await api(svc, "POST", "/v1/live-streams", {})
        await receiver.wait_for(4, within_s=30)
        times = [t for t, _, _ in receiver.received]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        expected = [base, 2 * base, 4 * base]  # exponential, factor 2, no jitter
        for got, want in zip(gaps, expected, strict=False):
            assert want * 0.9 <= got <= want + 0.7, (gaps, expected)
        assert len({wid for _, wid, _ in receiver.received}) == 1  # same message each time
        assert receiver.bad_signatures == 0
        log = await api(svc, "GET", f"/v1/webhook-endpoints/{endpoint['id']}/deliveries")
        delivery = log["data"][0]
        assert delivery["status"] == "pending" and delivery["attempt_count"] >= 4
        assert delivery["last_status_code"] == 500
    finally:
        svc.kill()
        if receiver is not None:
            await receiver.stop()


async def test_sigterm_is_graceful_with_an_event_stream_open(tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path / "data")
    try:
        await asyncio.to_thread(svc.start)
        async with aiohttp.ClientSession() as s:
            async with s.get(
                svc.url + "/v1/events/stream",
                headers={"Authorization": f"Bearer {svc.admin_key}"},
            ) as r:
                assert r.status == 200
                await r.content.readline()
                t0 = time.monotonic()
                code = await asyncio.to_thread(svc.stop)
                assert code == 0
                assert time.monotonic() - t0 < 5
                rest = await asyncio.wait_for(r.content.read(), 5)  # the stream ended cleanly
                assert b"Traceback" not in rest
        assert "Traceback" not in svc.logs()
        started = [json.loads(x) for x in svc.logs().splitlines() if x.startswith("{")]
        assert all(e.get("level") != "error" for e in started)
    finally:
        svc.kill()
