"""WHIP refusals are clear and never disturb a running broadcast; takeover, kick,
VP8-only publishers (transcoded to H.264)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender

from ingest.hub import TrackKind
from ingest.webrtc.config import prepare_ice
from tests.support.webrtc_client import HttpStatusError, delete_session, whip_publish
from tests.webrtc._media import PatternVideoTrack, ToneAudioTrack, collect, decode_h264_units

pytestmark = pytest.mark.e2e


async def _offer(server, video_codec: str | None = "video/VP8", audio: bool = True) -> str:
    pc = RTCPeerConnection(server.config.rtc_configuration())
    if video_codec:
        t = pc.addTransceiver(PatternVideoTrack(), direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        t.setCodecPreferences([c for c in caps if c.mimeType == video_codec])
    if audio:
        pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
    prepare_ice(pc, server.config)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def _post(
    server, body: str, key: str | None = "key-live-2", ctype: str = "application/sdp"
) -> tuple[int, Any, str]:
    headers = {"Content-Type": ctype}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.base}/v1/whip", data=body, headers=headers) as resp,
    ):
        return resp.status, resp.headers.copy(), await resp.text()


async def test_refusals_do_not_disturb_a_running_broadcast(server) -> None:
    stream = server.hub.stream("ls_1")
    reader = stream.subscribe("test", 4096)
    pc, location = await whip_publish(
        f"{server.base}/v1/whip",
        "key-live-1",
        [PatternVideoTrack(), ToneAudioTrack()],
        server.config,
    )
    try:
        await collect(reader, video=10, audio=5, timeout=20)
        generation = stream.generation
        good = await _offer(server)

        status, headers, body = await _post(server, "this is not sdp", key="key-live-1")
        assert status == 400 and "invalid_sdp" in body
        assert headers["Access-Control-Allow-Origin"] == "*"
        status, _, body = await _post(
            server, "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=video x\r\n", key="key-live-1"
        )
        assert status == 400
        status, headers, _ = await _post(server, good, key="wrong-key")
        assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
        status, _, _ = await _post(server, good, key=None)
        assert status == 401
        status, _, _ = await _post(server, good, key="key-disabled")
        assert status == 403
        status, _, _ = await _post(server, good, key="key-live-1", ctype="text/plain")
        assert status == 415
        status, _, _ = await _post(server, "v=0\r\n" + "a=x\r\n" * 20000, key="key-live-1")
        assert status == 413

        av1_only = good.replace("VP8/90000", "AV1/90000")
        status, _, body = await _post(server, av1_only, key="key-live-1")
        assert status == 422 and "no supported video codec" in body
        pcmu_audio = await _offer(server, video_codec=None)
        pcmu_audio = pcmu_audio.replace("opus/48000/2", "L16/48000/2")
        status, _, body = await _post(server, pcmu_audio, key="key-live-1")
        assert status == 422 and "audio" in body

        async with (
            aiohttp.ClientSession() as http,
            http.patch(
                location,
                data="a=end-of-candidates",
                headers={"Content-Type": "application/trickle-ice-sdpfrag"},
            ) as anonymous,
            http.patch(
                location,
                data="a=end-of-candidates",
                headers={
                    "Content-Type": "application/trickle-ice-sdpfrag",
                    "Authorization": "Bearer key-live-1",
                },
            ) as resp,
        ):
            assert anonymous.status == 401, "only the session's own credential may touch it"
            assert resp.status == 501

        # the broadcast is untouched: same generation, media still flowing
        before = stream.publication.units_written
        await asyncio.sleep(1.0)
        assert stream.live and stream.generation == generation
        assert stream.publication.units_written > before + 10
    finally:
        await delete_session(location, "key-live-1")
        await pc.close()
        reader.close()


async def test_takeover_closes_the_first_publisher_and_kick_closes_the_second(server) -> None:
    stream = server.hub.stream("ls_1")
    reader = stream.subscribe("test", 4096)
    pc1, _ = await whip_publish(
        f"{server.base}/v1/whip", "key-live-1", [PatternVideoTrack()], server.config
    )
    await collect(reader, video=5, audio=0, timeout=20)
    first = stream.generation
    pc2, loc2 = await whip_publish(
        f"{server.base}/v1/whip", "key-live-1", [PatternVideoTrack()], server.config
    )
    try:
        for _ in range(100):
            if (stream.generation > first and pc1.connectionState == "closed") or (
                len(server.routes.whip.sessions) == 1 and stream.generation > first
            ):
                break
            await asyncio.sleep(0.1)
        assert stream.generation == first + 1
        assert len(server.routes.whip.sessions) == 1
        (session,) = server.routes.whip.sessions.values()
        assert loc2.endswith(session.id)

        assert server.hub.kick("ls_1", "key_reset")
        await asyncio.sleep(0.2)
        assert not server.routes.whip.sessions
        assert session.pc.connectionState == "closed"
        assert not stream.live
    finally:
        await pc1.close()
        await pc2.close()
        reader.close()


async def test_vp8_only_publisher_is_transcoded_to_h264(server) -> None:
    reader = server.hub.stream("ls_2").subscribe("test", 4096)
    pc, location = await whip_publish(
        f"{server.base}/v1/whip",
        "key-live-2",
        [PatternVideoTrack(320, 240)],
        server.config,
        video_codec="video/VP8",
    )
    try:
        started, vids, _ = await collect(reader, video=20, audio=0, timeout=30)
        video = next(t for t in started.tracks if t.kind is TrackKind.VIDEO)
        assert (video.codec, video.width, video.height) == ("h264", 320, 240)
        assert vids[0].keyframe
        assert len(decode_h264_units(video.config, vids)) >= 15
    finally:
        await delete_session(location, "key-live-2")
        await pc.close()
        reader.close()


async def test_client_sees_clear_error_text(server) -> None:
    with pytest.raises(HttpStatusError) as err:
        await whip_publish(f"{server.base}/v1/whip", "nope", [PatternVideoTrack()], server.config)
    assert err.value.status == 401 and "stream key" in err.value.body


async def test_created_response_headers(server) -> None:
    offer = await _offer(server, video_codec="video/H264")
    status, headers, answer = await _post(server, offer, key="key-live-2")
    assert status == 201
    assert headers["Content-Type"].startswith("application/sdp")
    assert headers["Location"].startswith("/v1/whip/")
    assert headers["ETag"].startswith('"')
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "ETag" in headers["Access-Control-Expose-Headers"]
    assert "a=candidate:" in answer and " 127.0.0.1 " in answer
    # H.264 is preferred in the answer even though aiortc offers VP8 first by default
    video = answer[answer.index("m=video") :]
    first_pt = video.split("\r\n")[0].split()[3]
    assert f"a=rtpmap:{first_pt} H264/90000" in video
    async with aiohttp.ClientSession() as http:
        async with http.options(server.base + headers["Location"]) as resp:
            assert resp.status == 204 and "DELETE" in resp.headers["Access-Control-Allow-Methods"]
        async with http.delete(
            server.base + headers["Location"], headers={"Authorization": "Bearer someone-else"}
        ) as resp:
            assert resp.status == 401
        async with http.delete(server.base + headers["Location"]) as resp:
            assert resp.status == 401, "no credential, no DELETE"
        async with http.delete(
            server.base + headers["Location"], headers={"Authorization": "Bearer key-live-2"}
        ) as resp:
            assert resp.status == 200
    assert not server.routes.whip.sessions
