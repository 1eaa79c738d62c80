"""Enhanced RTMP against the real `onair serve`: PyAV's FFmpeg 8 publishes HEVC
(libx265) and AV1 (libsvtav1) over RTMP with FourCC `hvc1` / `av01`; onair
packages them as CMAF (`hvc1`+hvcC, `av01`+av1C sample entries) with the right
CODECS, records them, and hls.js in Chromium plays the AV1 stream (Chromium
here has no HEVC decoder: that one is checked with ffprobe). A WHEP viewer of
either gets a clear 422."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._media import ffprobe
from tests.e2e._players import player_site, players_available
from tests.e2e._service import Api, ServiceProcess, http_get, start_service, stop_service
from tests.e2e._webrtc import CLIENT_CONFIG
from tests.support.chromium import chromium_available, chromium_page
from tests.support.webrtc_client import HttpStatusError, whep_play

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


async def pyav_publish(svc: ServiceProcess, key: str, codec: str, seconds: float) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.e2e._pyav_publish",
        f"rtmp://127.0.0.1:{svc.rtmp_port}/live/{key}", codec, str(seconds),
        cwd=str(ROOT), env={**os.environ, "SVT_LOG": "1"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
async def svc(tmp_path: Path) -> Any:
    s = await start_service(tmp_path)
    yield s
    await stop_service(s)


async def live_codecs(svc: ServiceProcess, playback_id: str) -> str:
    for _ in range(100):
        status, body, _ = await http_get(f"{svc.url}/play/{playback_id}.m3u8")
        if status == 200 and b"CODECS" in body:
            text = body.decode()
            return text.split('CODECS="', 1)[1].split('"', 1)[0]
        await asyncio.sleep(0.1)
    raise AssertionError("no multivariant playlist")


async def whep_status(svc: ServiceProcess, playback_id: str) -> int:
    try:
        pc, _ = await whep_play(f"{svc.url}/v1/whep/{playback_id}", CLIENT_CONFIG)
    except HttpStatusError as exc:
        return exc.status
    await pc.close()
    return 201


@pytest.mark.parametrize(
    ("codec", "codec_prefix", "tag"), [("hevc", "hvc1.", "hvc1"), ("av1", "av01.", "av01")]
)
async def test_hevc_and_av1_over_enhanced_rtmp_become_cmaf_and_a_recording(
    svc: ServiceProcess, tmp_path: Path, codec: str, codec_prefix: str, tag: str
) -> None:
    api = Api(svc)
    ls = await api.live_stream(reconnect_window_s=1)
    pid = ls["playback_ids"][0]["id"]
    pub = await pyav_publish(svc, ls["stream_key"], codec, 8)
    live = await api.wait_stream_status(ls["id"], "active", within=30)
    codecs = await live_codecs(svc, pid)
    assert codecs.startswith(codec_prefix) and codecs.endswith(",mp4a.40.2"), codecs

    await asyncio.sleep(2.5)
    _, init, _ = await http_get(f"{svc.url}/play/{pid}/init-1.mp4")
    _, first, _ = await http_get(f"{svc.url}/play/{pid}/1.m4s")  # the first segment
    (tmp_path / "live.mp4").write_bytes(init + first)
    probe = await ffprobe(tmp_path / "live.mp4")
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    assert (video["codec_name"], video["codec_tag_string"]) == (codec, tag)
    assert (video["width"], video["height"]) == (320, 180)

    assert await whep_status(svc, pid) == 422  # WebRTC carries H.264 only, for now

    assert await pub.wait() == 0
    asset = await api.wait_asset(live["active_asset_id"], within=60)
    assert 6.0 <= asset["duration_s"] <= 9.5, asset
    _, vod, _ = await http_get(f"{svc.url}/play/{asset['playback_ids'][0]['id']}.m3u8")
    assert codec_prefix in vod.decode()


@pytest.mark.skipif(not chromium_available(), reason="chromium is not installed")
@pytest.mark.skipif(not players_available(), reason="make vendor-js has not run")
async def test_hls_js_in_chromium_plays_av1(svc: ServiceProcess) -> None:
    api = Api(svc)
    ls = await api.live_stream(record=False)
    pub = await pyav_publish(svc, ls["stream_key"], "av1", 40)
    try:
        await api.wait_stream_status(ls["id"], "active", within=30)
        await asyncio.sleep(2)
        src = f"{svc.url}/play/{ls['playback_ids'][0]['id']}.m3u8"
        async with (
            player_site("hls.js", src, {"lowLatencyMode": True}) as url,
            chromium_page(url, extra_args=["--autoplay-policy=no-user-gesture-required"]) as page,
        ):
            await page.wait_for("window.S && S.playing && S.t > 0", timeout_s=30)
            t0 = await page.evaluate("S.t")
            # decoded AV1 moving on (an AV1 encoder on a busy 2-core machine may
            # fall behind real time now and then: this is about decoding, not pace)
            await page.wait_for(f"S.t > {t0 + 3.0}", timeout_s=20)
            state = await page.evaluate(
                "({t: S.t, fatal: S.fatal, errors: S.errors,"
                " w: document.getElementById('v').videoWidth})"
            )
        assert state["fatal"] == 0 and state["w"] == 320, state
    finally:
        if pub.returncode is None:
            pub.kill()
        await pub.wait()
