"""WHIP in, WHEP out, both aiortc: H.264 forwarded end to end, the new viewer asks
the publisher for a keyframe, the viewer survives a publisher reconnect."""

from __future__ import annotations

import asyncio

import av
import pytest

from tests.support.webrtc_client import delete_session, whep_play, whip_publish
from tests.webrtc._media import PatternVideoTrack, ToneAudioTrack

pytestmark = pytest.mark.e2e


async def _frames(track, n: int) -> list:
    return [await asyncio.wait_for(track.recv(), 10) for _ in range(n)]


async def test_whip_publisher_plays_to_whep_viewer(server) -> None:
    requests: list[str] = []
    whep = server.routes.whep
    original = whep.keyframe_request
    assert original is not None

    def spy(live_stream_id: str) -> object:
        requests.append(live_stream_id)
        return original(live_stream_id)

    whep.keyframe_request = spy
    pub, pub_loc = await whip_publish(
        f"{server.base}/v1/whip",
        "key-live-1",
        [PatternVideoTrack(320, 240), ToneAudioTrack()],
        server.config,
    )
    stream = server.hub.stream("ls_1")
    for _ in range(100):
        if stream.live:
            break
        await asyncio.sleep(0.1)
    viewer, loc = await whep_play(f"{server.base}/v1/whep/pb_1", server.config)
    tracks = {t.kind: t.receiver.track for t in viewer.getTransceivers()}
    try:
        frames = await _frames(tracks["video"], 20)
        assert all(isinstance(f, av.VideoFrame) for f in frames)
        assert (frames[-1].width, frames[-1].height) == (320, 240)
        assert isinstance(await asyncio.wait_for(tracks["audio"].recv(), 10), av.AudioFrame)
        assert "ls_1" in requests

        # the publisher reconnects (new generation); the viewer keeps getting frames
        await delete_session(pub_loc, "key-live-1")
        await pub.close()
        pub, pub_loc = await whip_publish(
            f"{server.base}/v1/whip", "key-live-1", [PatternVideoTrack(320, 240)], server.config
        )
        frames = await _frames(tracks["video"], 20)
        assert frames[-1].width == 320
        assert len(whep.sessions) == 1
    finally:
        await delete_session(loc)
        await viewer.close()
        await delete_session(pub_loc, "key-live-1")
        await pub.close()
