"""End to end without RTMP: real H.264/AAC from an ffmpeg-made FLV is published into
the hub in real time; the LiveHlsManager segments it; aiohttp serves LL-HLS on
loopback; ffprobe decodes init+parts and plain ffmpeg (no LL-HLS) plays the playlist."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import m3u8
import pytest
from aiohttp import web

from ingest.hub import Hub
from realtime.hls.http import add_test_routes
from realtime.hls.manager import LiveHlsManager
from realtime.segments import FIRST_MSN
from tests.realtime.media import demux, feed_realtime

pytestmark = pytest.mark.e2e


@dataclass
class Server:
    hub: Hub
    manager: LiveHlsManager
    base: str


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    manager = LiveHlsManager(linger_s=5.0)
    hub = Hub(manager)
    app = web.Application()
    add_test_routes(app, lambda pid: manager.get(pid))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Server(hub, manager, f"http://127.0.0.1:{port}")
    finally:
        await manager.close()
        await runner.cleanup()


async def test_live_playlists_parse_and_parts_decode(
    server: Server, av_flv: Path, tmp_path: Path
) -> None:
    d = demux(av_flv)
    pub = server.hub.publish("s1", d.tracks, source="test")
    feeder = asyncio.create_task(feed_realtime(pub, d.units, speed=2.0))
    async with aiohttp.ClientSession() as http:
        # The first playlist is answered as soon as the first parts exist.
        async with http.get(f"{server.base}/play/s1.m3u8") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            mv = m3u8.loads(await r.text())
        assert mv.is_variant
        info = mv.playlists[0].stream_info
        assert info.codecs.startswith("avc1.64") and "mp4a.40.2" in info.codecs
        assert info.resolution == (320, 240)
        assert info.bandwidth > 0
        assert mv.playlists[0].uri == "s1/media.m3u8"

        async with http.get(f"{server.base}/play/s1/media.m3u8") as r:
            first = m3u8.loads(await r.text())
        assert first.segments or (first.segments == [] and first.preload_hint is not None)
        await feeder
        pub.close("done")
        await asyncio.sleep(0.1)
        async with http.get(f"{server.base}/play/s1/media.m3u8") as r:
            text = await r.text()
        pl = m3u8.loads(text)
        assert pl.server_control.can_block_reload == "YES"
        assert pl.part_inf.part_target == pytest.approx(0.2, abs=0.01)
        assert pl.segments[0].init_section.uri == "init-1.mp4"
        # init + every part of every segment, concatenated, decodes with ffprobe
        async with http.get(f"{server.base}/play/s1/init-1.mp4") as r:
            assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            blob = await r.read()
        # parts are listed for the last segments only; older ones as whole segments
        nparts = 0
        for seg in pl.segments:
            uris = [p.uri for p in seg.parts] or [seg.uri]
            nparts += len(seg.parts)
            for uri in uris:
                async with http.get(f"{server.base}/play/s1/{uri}") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"] == "video/iso.segment"
                    blob += await r.read()
        assert nparts >= 10
    out = tmp_path / "parts.mp4"
    out.write_bytes(blob)
    probe = await asyncio.to_thread(
        subprocess.run,
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,nb_read_frames",
            "-of",
            "json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    streams = {
        s["codec_type"]: int(s["nb_read_frames"]) for s in json.loads(probe.stdout)["streams"]
    }
    assert streams["video"] >= 100 and streams["audio"] >= 150
    decode = await asyncio.to_thread(
        subprocess.run,
        ["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert decode.returncode == 0 and decode.stderr.strip() == ""


async def test_plain_ffmpeg_plays_the_live_playlist(
    server: Server, long_flv: Path, tmp_path: Path
) -> None:
    d = demux(long_flv)
    pub = server.hub.publish("s2", d.tracks, source="test")
    feeder = asyncio.create_task(feed_realtime(pub, d.units, loop_count=2))
    try:
        # wait until two segments exist, then let ffmpeg (no LL-HLS support) play it live
        live = server.manager.get("s2")
        assert live is not None
        assert await live.wait_for(FIRST_MSN + 1, None, timeout_s=10)
        out = tmp_path / "ffmpeg.mp4"
        proc = await asyncio.create_subprocess_exec(
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            f"{server.base}/play/s2.m3u8",
            "-t",
            "3",
            "-c",
            "copy",
            str(out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
    finally:
        feeder.cancel()
    probe = await asyncio.to_thread(
        subprocess.run,
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type:format=duration",
            "-of",
            "json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    info = json.loads(probe.stdout)
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
    assert float(info["format"]["duration"]) >= 2.5
