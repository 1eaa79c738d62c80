"""Fixtures for room tests: a RoomService behind a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from ingest.hub import Hub
from realtime.rooms.room import RoomConfig, RoomEvent
from realtime.rooms.routes import add_room_routes
from realtime.rooms.rtc import RtcSettings
from realtime.rooms.service import RoomService, StaticDirectory
from realtime.rooms.tokens import JoinTokens

SECRET = "test-secret-" + "x" * 40


class RecordingEvents:
    def __init__(self) -> None:
        self.events: list[RoomEvent] = []

    async def room_event(self, event: RoomEvent) -> None:
        self.events.append(event)

    def types(self) -> list[str]:
        return [f"{e.type}:{getattr(e, 'identity', '')}" for e in self.events]


@dataclass
class RoomServer:
    base_url: str
    service: RoomService
    tokens: JoinTokens
    directory: StaticDirectory
    events: RecordingEvents
    hub: Hub
    runner: web.AppRunner = field(repr=False)

    def token(self, room: str, identity: str, **kw: object) -> str:
        return self.tokens.issue(room, identity, **kw)  # type: ignore[arg-type]


async def start_room_server(
    *configs: RoomConfig, video_codec: str = "video/VP8", **kw: object
) -> RoomServer:
    tokens = JoinTokens(SECRET)
    directory = StaticDirectory(*configs)
    events = RecordingEvents()
    hub = Hub()
    service = RoomService(
        tokens,
        directory,
        events,
        hub=hub,
        rtc=RtcSettings.loopback(),
        video_codec=video_codec,
        **kw,
    )  # type: ignore[arg-type]
    app = web.Application()
    add_room_routes(app, service)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return RoomServer(f"http://127.0.0.1:{port}", service, tokens, directory, events, hub, runner)


@pytest.fixture
async def room_server() -> AsyncIterator[RoomServer]:
    srv = await start_room_server(
        RoomConfig("RM_a", empty_timeout_s=1.0), RoomConfig("RM_b", max_participants=2)
    )
    yield srv
    await srv.runner.cleanup()


@pytest.fixture
async def h264_room_server() -> AsyncIterator[RoomServer]:
    srv = await start_room_server(RoomConfig("RM_a"), video_codec="video/H264")
    yield srv
    await srv.runner.cleanup()
