"""Fixtures for the WebRTC tests: a hub, a fake publish authority, an aiohttp
server on 127.0.0.1 (OS-assigned port) with the WHIP/WHEP routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from ingest.hub import Hub
from ingest.webrtc.config import WebRtcConfig
from realtime.webrtc.routes import WebRtcRoutes, add_webrtc_routes
from tests.webrtc._media import FakeAuthority, resolve_playback


@dataclass
class Server:
    base: str
    hub: Hub
    routes: WebRtcRoutes
    config: WebRtcConfig


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    hub = Hub()
    config = WebRtcConfig.loopback()
    app = web.Application()
    routes = add_webrtc_routes(
        app, hub=hub, authority=FakeAuthority(), resolve_playback=resolve_playback, config=config
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Server(f"http://127.0.0.1:{port}", hub, routes, config)
    finally:
        await runner.cleanup()
