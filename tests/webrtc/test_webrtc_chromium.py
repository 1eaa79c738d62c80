"""Headless Chromium with fake camera/mic publishes from /publish/...; a second
Chromium plays it over WHEP and the page decodes non-black, advancing frames."""

from __future__ import annotations

import asyncio

import pytest

from ingest.hub import TrackKind
from tests.support.chromium import chromium_available, chromium_page

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not chromium_available(), reason="chromium not installed"),
]

FAKE_MEDIA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")


async def test_browser_publishes_over_whip_and_another_browser_plays_over_whep(server) -> None:
    stream = server.hub.stream("ls_1")
    async with chromium_page(
        f"{server.base}/publish/ls_1?key=key-live-1&autostart=1", extra_args=FAKE_MEDIA
    ) as publisher:
        await publisher.wait_for(
            "window.onairPublish && window.onairPublish.state === 'live'", timeout_s=30
        )
        for _ in range(100):
            if stream.live:
                break
            await asyncio.sleep(0.1)
        assert stream.live, publisher.console[-20:]
        assert await publisher.evaluate("window.onairPublish.codec") == "H264"
        video = next(t for t in stream.tracks if t.kind is TrackKind.VIDEO)
        assert video.codec == "h264" and video.width > 0 and video.config
        assert any(t.kind is TrackKind.AUDIO and t.codec == "aac" for t in stream.tracks)

        async with chromium_page(f"{server.base}/watch/pb_1/webrtc") as viewer:
            await viewer.wait_for(
                "window.onairStats && window.onairStats.playing && window.onairStats.nonBlack",
                timeout_s=30,
            )
            first = await viewer.evaluate("window.onairStats.currentTime")
            await asyncio.sleep(1.5)
            stats = await viewer.evaluate("JSON.parse(JSON.stringify(window.onairStats))")
            assert stats["currentTime"] > first + 0.5
            assert stats["nonBlack"] and stats["luma"] > 16
            assert (stats["width"], stats["height"]) == (video.width, video.height)
            assert stats["framesDecoded"] > 10
        await publisher.evaluate("window.onairPublish.stop()")
        for _ in range(50):
            if not stream.live:
                break
            await asyncio.sleep(0.1)
        assert not stream.live


async def test_browser_plays_an_rtmp_like_high_profile_stream_over_whep(server, tmp_path) -> None:
    import contextlib

    from tests.webrtc._media import feed_file, make_h264_aac_file

    path = make_h264_aac_file(str(tmp_path / "src.mp4"), seconds=3, bframes=0)
    feeder = asyncio.ensure_future(feed_file(server.hub, "ls_2", path))
    try:
        await asyncio.sleep(0.5)
        async with chromium_page(f"{server.base}/watch/pb_2/webrtc") as viewer:
            await viewer.wait_for(
                "window.onairStats && window.onairStats.playing && window.onairStats.nonBlack",
                timeout_s=30,
            )
            first = await viewer.evaluate("window.onairStats.currentTime")
            await asyncio.sleep(1.5)
            stats = await viewer.evaluate("JSON.parse(JSON.stringify(window.onairStats))")
            assert stats["currentTime"] > first + 0.5
            assert (stats["width"], stats["height"]) == (320, 240)
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
