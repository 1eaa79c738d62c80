"""WHIP: an aiortc client publishes; the hub sees an RTMP-like stream (H.264 AVCC
with avcC + size, AAC with an AudioSpecificConfig) that decodes."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import pytest

from ingest.hub import TrackKind
from ingest.webrtc import h264
from tests.support.webrtc_client import delete_session, whip_publish
from tests.webrtc._media import (
    PatternVideoTrack,
    ToneAudioTrack,
    collect,
    decode_aac_units,
    decode_h264_units,
)

pytestmark = pytest.mark.e2e


async def test_aiortc_publishes_h264_and_aac_into_the_hub(server) -> None:
    stream = server.hub.stream("ls_1")
    reader = stream.subscribe("test", 2048)
    tracks = [PatternVideoTrack(320, 240), ToneAudioTrack()]
    pc, location = await whip_publish(f"{server.base}/v1/whip", "key-live-1", tracks, server.config)
    try:
        assert location.startswith(f"{server.base}/v1/whip/")
        started, vids, auds = await collect(reader, video=45, audio=50, timeout=20)
        assert started.source == "whip"
        video = next(t for t in started.tracks if t.kind is TrackKind.VIDEO)
        audio = next(t for t in started.tracks if t.kind is TrackKind.AUDIO)
        assert (video.codec, video.timescale) == ("h264", 90000)
        assert (video.width, video.height) == (320, 240)
        assert video.config[0] == 1  # avcC
        assert (audio.codec, audio.sample_rate, audio.channels) == ("aac", 48000, 2)
        assert audio.config == bytes([0x11, 0x90])

        assert vids[0].keyframe
        assert all(h264.split_avcc(u.data) for u in vids)  # AVCC, not Annex B
        dts = [u.dts for u in vids]
        assert dts == sorted(dts)
        frames = decode_h264_units(video.config, vids)
        assert len(frames) >= 40
        assert (frames[0].width, frames[0].height) == (320, 240)

        # both tracks share one timeline: media time differences match arrival ones
        v = vids[-1]
        a = min(auds, key=lambda u: abs(u.wallclock - v.wallclock))
        skew = (v.dts / 90000 - a.dts / 48000) - (v.wallclock - a.wallclock)
        assert abs(skew) < 0.3  # arrival times jitter with load (AAC is encoded in a thread)
        assert min(vids[0].dts, auds[0].dts) >= 0

        steps = {b.dts - a.dts for a, b in itertools.pairwise(auds)}
        assert steps == {1024}
        pcm = decode_aac_units(audio.config, auds)
        assert len(pcm) >= 40 and pcm[-1].sample_rate == 48000
    finally:
        assert await delete_session(location, "key-live-1") == 200
        await pc.close()
    # DELETE ended the broadcast
    await asyncio.sleep(0.1)
    assert not stream.live
    reader.close()


async def test_delete_unknown_session_is_404_and_patch_is_501(server) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{server.base}/v1/whip/nope") as resp:
            assert resp.status == 404
        async with http.options(f"{server.base}/v1/whip") as resp:
            assert resp.status == 204
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
            assert "Location" in resp.headers["Access-Control-Expose-Headers"]


async def test_audio_only_publisher_is_published_at_once(server) -> None:
    stream = server.hub.stream("ls_2")
    reader = stream.subscribe("test", 2048)
    pc, location = await whip_publish(
        f"{server.base}/v1/whip", "key-live-2", [ToneAudioTrack()], server.config
    )
    try:
        started, _, auds = await collect(reader, video=0, audio=20, timeout=20)
        assert [t.codec for t in started.tracks] == ["aac"]
        assert len(decode_aac_units(started.tracks[0].config, auds)) >= 15
    finally:
        await delete_session(location, "key-live-2")
        await pc.close()
        reader.close()
