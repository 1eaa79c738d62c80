"""Debian's ffmpeg publishes a test source over RTMP (ingest.rtmp) and the stream comes
out as LL-HLS: the playlists parse with `m3u8`, carry the LL-HLS tags, and init+parts
decode with ffprobe (both tracks)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import m3u8
import pytest
from aiohttp import web

from ingest.hub import Hub
from ingest.ports import PublishDenied, PublishGrant
from realtime.hls.http import add_test_routes
from realtime.hls.manager import LiveHlsManager
from realtime.segments import FIRST_MSN

pytestmark = pytest.mark.e2e

rtmp_server = pytest.importorskip("ingest.rtmp.server")


class Keys:
    async def authorize_publish(
        self, stream_key: str, *, protocol: str, remote: str
    ) -> PublishGrant:
        if stream_key != "sk_good":
            raise PublishDenied("bad_key", "unknown stream key")
        return PublishGrant("ls_1")


@pytest.fixture
async def stack() -> AsyncIterator[tuple[int, str, LiveHlsManager]]:
    manager = LiveHlsManager(linger_s=2.0)
    hub = Hub(manager)
    rtmp = rtmp_server.RtmpServer(hub, Keys(), host="127.0.0.1", port=0)
    await rtmp.start()
    app = web.Application()
    add_test_routes(app, manager.get)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield rtmp.port, f"http://127.0.0.1:{port}", manager
    finally:
        await rtmp.stop()
        await manager.close()
        await runner.cleanup()


async def test_ffmpeg_rtmp_publish_comes_out_as_ll_hls(
    stack: tuple[int, str, LiveHlsManager], tmp_path: Path
) -> None:
    rtmp_port, base, manager = stack
    ffmpeg = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", "6", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
        "-f", "flv", f"rtmp://127.0.0.1:{rtmp_port}/live/sk_good",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(100):
            if manager.get("ls_1") is not None:
                break
            await asyncio.sleep(0.1)
        live = manager.get("ls_1")
        assert live is not None, "the RTMP publication did not reach the hub"
        assert await live.wait_for(FIRST_MSN + 2, 0, timeout_s=15)  # two whole segments
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/play/ls_1.m3u8") as r:
                mv = m3u8.loads(await r.text())
            info = mv.playlists[0].stream_info
            assert info.resolution == (640, 360) and "mp4a.40.2" in info.codecs
            msn, part = live.next_part()
            url = f"{base}/play/ls_1/media.m3u8?_HLS_msn={msn}&_HLS_part={part}"
            async with http.get(url) as r:
                assert r.status == 200
                text = await r.text()
            pl = m3u8.loads(text)
            for tag in (
                "#EXT-X-PART-INF",
                "#EXT-X-SERVER-CONTROL",
                "#EXT-X-PRELOAD-HINT",
                "#EXT-X-MAP",
                "#EXT-X-PROGRAM-DATE-TIME",
                "INDEPENDENT=YES",
            ):
                assert tag in text, tag
            assert pl.server_control.can_block_reload == "YES"
            async with http.get(f"{base}/play/ls_1/{pl.segments[0].init_section.uri}") as r:
                blob = await r.read()
            for seg in pl.segments:
                for uri in [p.uri for p in seg.parts] or [seg.uri]:
                    async with http.get(f"{base}/play/ls_1/{uri}") as r:
                        assert r.status == 200
                        blob += await r.read()
    finally:
        if ffmpeg.returncode is None:
            ffmpeg.kill()
        await ffmpeg.wait()
    out = tmp_path / "rtmp.mp4"
    out.write_bytes(blob)
    probe = await asyncio.to_thread(
        subprocess.run,
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,codec_name,nb_read_frames,sample_rate", "-of", "json", str(out)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    streams = {s["codec_type"]: s for s in json.loads(probe.stdout)["streams"]}
    assert (
        streams["video"]["codec_name"] == "h264" and int(streams["video"]["nb_read_frames"]) >= 60
    )
    assert streams["audio"]["codec_name"] == "aac" and streams["audio"]["sample_rate"] == "44100"
    assert int(streams["audio"]["nb_read_frames"]) >= 80
    decode = await asyncio.to_thread(
        subprocess.run, ["ffmpeg", "-v", "error", "-i", str(out), "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert decode.returncode == 0 and decode.stderr.strip() == "", decode.stderr
