"""OBS Studio 29 (Debian's, headless under Xvfb) publishing to the real `onair
serve`, configured as users do: the custom server and stream key of the Stream
settings, Simple output mode (OBS's default keyframe interval, which gets the
stream a keyframe_interval warning) or Advanced mode with a 2 s keyframe
interval, RTMP, RTMPS (trusting the test's certificate) or SRT. Its stream goes
live and plays as LL-HLS; a wrong key is refused; after a server restart OBS
comes back through its own reconnect."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e._media import poll
from tests.e2e._obs import ObsStudio, obs_available
from tests.e2e._service import (
    Api,
    ServiceProcess,
    free_port,
    http_get,
    start_service,
    stop_service,
)
from tests.e2e._tls import self_signed

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not obs_available(), reason="obs-studio / xvfb are not installed"),
]


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    s = await start_service(tmp_path)
    yield s
    await stop_service(s)


@pytest.fixture
async def studios() -> AsyncIterator[list[ObsStudio]]:
    started: list[ObsStudio] = []
    yield started
    for obs in started:
        await obs.stop()


async def start_obs(studios: list[ObsStudio], home: Path, server: str, **kw: object) -> ObsStudio:
    obs = ObsStudio(home, server, **kw)  # type: ignore[arg-type]
    studios.append(obs)
    await obs.start()
    return obs


async def segment_durations(svc: ServiceProcess, playback_id: str, count: int) -> list[float]:
    """The EXTINF durations once the live playlist lists `count` full segments."""

    async def playlist() -> str:
        status, body, _ = await http_get(f"{svc.url}/play/{playback_id}/media.m3u8")
        return body.decode() if status == 200 else ""

    text = await poll(
        playlist, lambda t: t.count("#EXTINF:") >= count, within=90, what=f"{count} segments"
    )
    return [float(d) for d in re.findall(r"#EXTINF:([\d.]+)", text)]


def assert_two_second_keyframes(durations: list[float]) -> None:
    """Segments of OBS with a 2 s keyframe interval: none longer, most 2 s. The
    first may be short (OBS's start: CI saw 1.87 s), and x264's scene-cut
    detection adds a keyframe where the looping clip starts over (CI: 1.67 s)."""
    assert all(d <= 2.1 for d in durations), durations
    assert sum(1.9 <= d for d in durations) >= len(durations) - 1, durations


async def test_stock_obs_publishes_and_plays(
    svc: ServiceProcess, studios: list[ObsStudio], tmp_path: Path
) -> None:
    api = Api(svc)
    ls = await api.live_stream(record=False, reconnect_window_s=1)
    obs = await start_obs(
        studios, tmp_path / "obs", f"rtmp://127.0.0.1:{svc.rtmp_port}/live", key=ls["stream_key"]
    )
    await api.wait_stream_status(ls["id"], "active", within=60)
    # OBS's default keyframe interval: at most 250 frames, so segments of up to
    # 8.3 s (x264's scene-cut detection adds keyframes too, where the looping
    # clip starts over, and OBS's start may make a short first one)
    pid = ls["playback_ids"][0]["id"]

    async def long_segment() -> list[float]:
        return await segment_durations(svc, pid, 1)

    durations = await poll(
        long_segment, lambda d: max(d) >= 8.0, within=60, what="an 8.3 s segment"
    )
    assert all(d <= 8.7 for d in durations), durations

    async def warned() -> list[dict[str, str]]:
        return list((await api.ok("GET", f"/v1/live-streams/{ls['id']}"))["warnings"])

    # and the stream says what to change (ingest health)
    warnings = await poll(
        warned,
        lambda ws: any(w["type"] == "keyframe_interval" for w in ws),
        within=20,
        what="the keyframe interval warning",
    )
    (keyframes,) = [w for w in warnings if w["type"] == "keyframe_interval"]
    assert "OBS" in keyframes["message"] and "2 s" in keyframes["message"]
    await obs.stop_streaming()
    assert "User stopped the stream" in obs.log_text()  # an unpublish, not a kill
    await api.wait_stream_status(ls["id"], "idle", within=20)


async def test_obs_with_2s_keyframes_comes_back_after_a_server_restart(
    svc: ServiceProcess, studios: list[ObsStudio], tmp_path: Path
) -> None:
    api = Api(svc)
    ls = await api.live_stream(record=False, reconnect_window_s=30)
    await start_obs(
        studios,
        tmp_path / "obs",
        f"rtmp://127.0.0.1:{svc.rtmp_port}/live",
        key=ls["stream_key"],
        keyint_sec=2,
    )
    await api.wait_stream_status(ls["id"], "active", within=60)
    pid = ls["playback_ids"][0]["id"]
    durations = await segment_durations(svc, pid, 3)
    assert_two_second_keyframes(durations)
    _, body, _ = await http_get(f"{svc.url}/play/{pid}/media.m3u8")
    assert "#EXT-X-TARGETDURATION:2" in body.decode()

    await asyncio.to_thread(svc.stop, 15)
    await asyncio.to_thread(svc.start, 60)
    # OBS notices, retries every second and publishes again on its own
    await api.wait_stream_status(ls["id"], "active", within=60)
    await segment_durations(svc, pid, 1)


async def test_obs_publishes_over_srt(
    svc: ServiceProcess, studios: list[ObsStudio], tmp_path: Path
) -> None:
    api = Api(svc)
    ls = await api.live_stream(record=False, reconnect_window_s=1)
    url = f"srt://127.0.0.1:{svc.srt_port}?streamid={ls['stream_key']}"
    await start_obs(studios, tmp_path / "obs", url, keyint_sec=2)
    await api.wait_stream_status(ls["id"], "active", within=60)
    durations = await segment_durations(svc, ls["playback_ids"][0]["id"], 3)
    assert_two_second_keyframes(durations)


async def test_obs_publishes_over_rtmps(studios: list[ObsStudio], tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    svc = await start_service(
        tmp_path,
        {
            "ONAIR_RTMPS_PORT": str(port),
            "ONAIR_TLS_CERT_FILE": str(cert),
            "ONAIR_TLS_KEY_FILE": str(key),
        },
    )
    try:
        api = Api(svc)
        ls = await api.live_stream(record=False, reconnect_window_s=1)
        server = ls["ingest"]["rtmps_url"]
        assert server == f"rtmps://127.0.0.1:{port}/live"
        obs = await start_obs(
            studios, tmp_path / "obs", server, key=ls["stream_key"], keyint_sec=2, trust=cert
        )
        await api.wait_stream_status(ls["id"], "active", within=60)
        durations = await segment_durations(svc, ls["playback_ids"][0]["id"], 3)
        assert_two_second_keyframes(durations)
        assert (
            "Connection to rtmps://" in obs.log_text()
            and "Cert verify failed" not in obs.log_text()
        )
    finally:
        for o in studios:
            await o.stop()
        await stop_service(svc)


async def test_obs_with_a_wrong_key_is_refused(
    svc: ServiceProcess, studios: list[ObsStudio], tmp_path: Path
) -> None:
    api = Api(svc)
    ls = await api.live_stream(record=False)
    obs = await start_obs(
        studios, tmp_path / "obs", f"rtmp://127.0.0.1:{svc.rtmp_port}/live", key="sk_" + "x" * 32
    )

    async def log() -> str:
        return obs.log_text()

    text = await poll(
        log, lambda t: "Connection to rtmp" in t and "failed" in t, within=60, what="a refusal"
    )
    assert "Streaming Start" not in text.split("failed")[0]
    assert (await api.ok("GET", f"/v1/live-streams/{ls['id']}"))["status"] == "idle"
