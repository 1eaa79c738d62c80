"""Fixtures for the WebRTC tests: a hub, a fake publish authority, an aiohttp
server on 127.0.0.1 (OS-assigned port) with the WHIP/WHEP routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from ingest.hub import Hub
from ingest.ports import PublishDenied, PublishGrant
from realtime.webrtc.config import WebRtcConfig
from realtime.webrtc.routes import WebRtcRoutes, add_webrtc_routes
from realtime.whep import PlaybackDenied


@dataclass
class FakeAuthority:
    keys: dict[str, str] = field(
        default_factory=lambda: {"key-live-1": "ls_1", "key-live-2": "ls_2"}
    )
    disabled: set[str] = field(default_factory=lambda: {"key-disabled"})

    async def authorize_publish(
        self, stream_key: str, *, protocol: str, remote: str
    ) -> PublishGrant:
        if stream_key in self.disabled:
            raise PublishDenied("disabled", "this live stream is disabled")
        if stream_key not in self.keys:
            raise PublishDenied("bad_key", "unknown stream key")
        return PublishGrant(self.keys[stream_key])


def resolve_playback(playback_id: str, token: str | None) -> str:
    """pb_N -> ls_N (public); sig_N -> ls_N with token "good" (signed)."""
    if playback_id.startswith("pb_"):
        return "ls_" + playback_id[3:]
    if playback_id.startswith("sig_"):
        if token != "good":
            raise PlaybackDenied(403, "a valid playback token is required")
        return "ls_" + playback_id[4:]
    raise LookupError(playback_id)


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
