"""A real webhook receiver on 127.0.0.1 for tests: verifies every request with
the independent `standardwebhooks` package and records what arrived.

    async with WebhookReceiver() as rx:
        url = rx.url("/ok", secret=whsec)              # 200, verified with whsec
        url = rx.url("/fail", secret=whsec, status=500)
        url = rx.url("/slow", secret=whsec, delay_s=3)
        await rx.wait_for(3, path="/ok")

Behaviour can be changed while running (`rx.set(path, status=..., delay_s=...)`).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook


@dataclass(slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    verified: bool
    status: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class _Behaviour:
    secret: str | None = None
    status: int = 200
    delay_s: float = 0.0


@dataclass
class WebhookReceiver:
    host: str = "127.0.0.1"
    received: list[Received] = field(default_factory=list)
    _behaviours: dict[str, _Behaviour] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _port: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: dict[str, int] = field(default_factory=dict)
    max_in_flight: dict[str, int] = field(default_factory=dict)

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return f"http://{self.host}:{self._port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(
        self, path: str, *, secret: str | None = None, status: int = 200, delay_s: float = 0.0
    ) -> str:
        self._behaviours[path] = _Behaviour(secret, status, delay_s)
        return f"http://{self.host}:{self._port}{path}"

    def set(self, path: str, **changes: Any) -> None:
        b = self._behaviours.setdefault(path, _Behaviour())
        for k, v in changes.items():
            setattr(b, k, v)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(self, n: int, *, path: str | None = None, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while True:
            got = len(self.received if path is None else self.at(path))
            if got >= n:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{got}/{n} webhook requests for {path or 'any path'}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.time()
        path = request.path
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        b = self._behaviours.get(path, _Behaviour())
        verified = False
        if b.secret is not None:
            try:
                Webhook(b.secret).verify(body, headers)
                verified = True
            except Exception:
                verified = False
        self.in_flight[path] = self.in_flight.get(path, 0) + 1
        self.max_in_flight[path] = max(self.max_in_flight.get(path, 0), self.in_flight[path])
        try:
            self.received.append(Received(path, headers, body, at, verified, b.status))
            self._changed.set()
            if b.delay_s:
                await asyncio.sleep(b.delay_s)
        finally:
            self.in_flight[path] -= 1
        return web.Response(status=b.status, text="ok" if b.status < 300 else "no")
