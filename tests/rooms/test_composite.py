"""A recorded room is published into the hub as one H.264 + AAC live stream
(source "room") while it runs, and the publication ends with the room."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from ingest.hub import Hub, MediaUnit, PublicationEnded, PublicationStarted, TrackKind
from ingest.webrtc.h264 import split_avcc
from realtime.rooms.composite import RoomComposite, grid
from realtime.rooms.room import RoomConfig
from tests.support.room_client import EncodedSource, RoomClient, encode_h264, encode_opus

from .conftest import RoomServer, start_room_server

pytestmark = pytest.mark.e2e


def test_grid_tiles_fill_the_canvas() -> None:
    assert grid(1, 640, 360) == [(0, 0, 640, 360)]
    assert grid(2, 640, 360) == [(0, 0, 320, 360), (320, 0, 320, 360)]
    assert len(grid(5, 640, 360)) == 5 and grid(5, 640, 360)[4] == (212, 180, 212, 180)


@pytest.fixture
async def rec_server() -> AsyncIterator[RoomServer]:
    srv = await start_room_server(
        RoomConfig("RM_rec", record=True, broadcast_stream_id="ls_room"),
        composite_factory=lambda hub, cfg: RoomComposite(
            hub,
            cfg.broadcast_stream_id or cfg.room_id,
            width=320,
            height=180,
            fps=15,
            video_bitrate=300_000,
        ),
    )
    yield srv
    await srv.runner.cleanup()


async def test_recorded_room_publishes_h264_and_aac_into_the_hub(rec_server: RoomServer) -> None:
    srv = rec_server
    hub: Hub = srv.hub
    reader = hub.stream("ls_room").subscribe("test", 10_000)
    a = RoomClient(srv.base_url, "RM_rec", srv.token("RM_rec", "alice"))
    b = RoomClient(srv.base_url, "RM_rec", srv.token("RM_rec", "bob"))
    try:
        await a.connect()
        await b.connect()
        await a.publish(
            [
                (EncodedSource("audio", encode_opus(50), 48000), "microphone"),
                (EncodedSource("video", encode_h264(60, gop=30), 90000), "camera"),
            ]
        )
        await b.publish([(EncodedSource("video", encode_h264(60, gop=30), 90000), "camera")])
        started: PublicationStarted | None = None
        video: list[MediaUnit] = []
        audio: list[MediaUnit] = []
        async with asyncio.timeout(20):
            while len(video) < 30 or len(audio) < 30:
                item = await reader.get()
                if isinstance(item, PublicationStarted):
                    started = item
                elif isinstance(item, MediaUnit):
                    (video if item.kind is TrackKind.VIDEO else audio).append(item)
        assert started is not None and started.source == "room"
        kinds = {t.kind: t for t in started.tracks}
        assert kinds[TrackKind.VIDEO].codec == "h264" and kinds[TrackKind.VIDEO].config[0] == 1
        assert kinds[TrackKind.AUDIO].codec == "aac" and kinds[TrackKind.AUDIO].sample_rate == 48000
        assert video[0].keyframe
        for u in video[:10]:
            assert split_avcc(u.data)  # AVCC: 4-byte lengths that add up
        assert all(b.dts > a.dts for a, b in itertools.pairwise(video))
        assert all(b.dts - a.dts == 1024 for a, b in itertools.pairwise(audio))
        comp = srv.service.rooms["RM_rec"].composite
        assert comp is not None and comp.video_frames > 0
    finally:
        await a.close()
        await b.close()
    await srv.service.close_room("RM_rec", reason="deleted")
    async with asyncio.timeout(10):
        while True:
            item = await reader.get()
            if isinstance(item, PublicationEnded):
                break
    reader.close()
