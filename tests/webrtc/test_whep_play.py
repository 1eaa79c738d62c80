"""WHEP: an RTMP-like stream in the hub plays to aiortc viewers without re-encoding."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import av
import pytest

from tests.support.webrtc_client import delete_session, whep_play
from tests.webrtc._media import feed_file, make_h264_aac_file

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def h264_file(tmp_path_factory) -> str:
    return make_h264_aac_file(str(tmp_path_factory.mktemp("media") / "src.mp4"))


async def _frames(track, n: int, timeout: float) -> list:  # noqa: ASYNC109
    frames = []

    async def run() -> None:
        while len(frames) < n:
            frames.append(await track.recv())

    await asyncio.wait_for(run(), timeout)
    return frames


async def test_rtmp_like_stream_plays_over_whep(server, h264_file) -> None:
    feeder = asyncio.ensure_future(feed_file(server.hub, "ls_1", h264_file))
    await asyncio.sleep(1.2)
    pc, location = await whep_play(f"{server.base}/v1/whep/pb_1", server.config)
    tracks = {t.kind: t.receiver.track for t in pc.getTransceivers()}
    try:
        video = await _frames(tracks["video"], 30, 15)
        assert all(isinstance(f, av.VideoFrame) for f in video)
        assert (video[-1].width, video[-1].height) == (320, 240)
        audio = await _frames(tracks["audio"], 20, 10)
        assert all(isinstance(f, av.AudioFrame) for f in audio)
        # one shared Opus transcoder for the stream
        assert len(server.routes.whep._opus) == 1
    finally:
        assert await delete_session(location) == 200
        await pc.close()
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
    assert not server.routes.whep.sessions
    assert not server.routes.whep._opus


async def test_whep_errors(server, h264_file) -> None:
    offer = await _recv_offer(server)
    sdp = {"Content-Type": "application/sdp"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.base}/v1/whep/pb_1", data="v=0\r\n", headers=sdp) as r:
            assert r.status == 400
        async with http.post(f"{server.base}/v1/whep/unknown", data=offer, headers=sdp) as r:
            assert r.status == 404
        async with http.post(f"{server.base}/v1/whep/pb_1", data=offer, headers=sdp) as r:
            assert r.status == 404  # not live
        async with http.post(
            f"{server.base}/v1/whep/pb_1", data="x", headers={"Content-Type": "text/plain"}
        ) as r:
            assert r.status == 415
        # signed playback: the token reaches the resolver (Bearer or ?token=)
        async with http.post(f"{server.base}/v1/whep/sig_1", data=offer, headers=sdp) as r:
            assert r.status == 403
            assert r.headers["Access-Control-Allow-Origin"] == "*"
        async with http.post(
            f"{server.base}/v1/whep/sig_1",
            data=offer,
            headers={**sdp, "Authorization": "Bearer good"},
        ) as r:
            assert r.status == 404  # accepted, but nothing is live
        async with http.options(f"{server.base}/v1/whep/pb_1") as r:
            assert r.status == 204
            assert "Location" in r.headers["Access-Control-Expose-Headers"]

    feeder = asyncio.ensure_future(feed_file(server.hub, "ls_1", h264_file))
    try:
        await asyncio.sleep(0.5)
        vp8_only = offer.replace("H264/90000", "H265/90000")
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{server.base}/v1/whep/pb_1", data=vp8_only, headers=sdp) as r,
        ):
            assert r.status == 422
            assert "H264" in (await r.json())["error"]["message"]
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder


async def _recv_offer(server) -> str:
    from aiortc import RTCPeerConnection

    from ingest.webrtc.config import prepare_ice

    pc = RTCPeerConnection(server.config.rtc_configuration())
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    prepare_ice(pc, server.config)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp
