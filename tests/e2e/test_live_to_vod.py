"""Issue 4, live-to-VOD against the real `onair serve` with real ffmpeg: a
broadcast becomes a ready asset within 2 s of its reconnect window closing,
with an ENDLIST VOD playlist of the broadcast's length, an MP4 download with
both tracks and a JPEG thumbnail; a reconnect inside the window gives one
asset with one discontinuity and one gap."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import m3u8
import pytest

from tests.e2e._media import Publisher, ffmpeg_decode, ffprobe, poll, tags
from tests.e2e._service import Api, ServiceProcess, http_get, rtmp_url

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WINDOW_S = 2.0


def at(events: list[dict[str, Any]], type_: str) -> float:
    """When the (first) event of `type_` was logged, in epoch seconds."""
    stamp = next(e["created_at"] for e in events if e["type"] == type_)
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    s = ServiceProcess(tmp_path_factory.mktemp("live_to_vod") / "data")
    s.start(60)
    try:
        yield s
    finally:
        s.stop(15) if s.proc is not None else None


async def test_a_broadcast_becomes_a_ready_asset_when_the_window_closes(
    svc: ServiceProcess, tmp_path: Path
) -> None:
    api = Api(svc)
    ls = await api.live_stream(reconnect_window_s=WINDOW_S)
    pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), 10, log=tmp_path / "ff.log")
    live = await api.wait_stream_status(ls["id"], "active", within=20)
    asset_id = live["active_asset_id"]
    assert asset_id
    assert await pub.wait() == 0
    stopped = time.monotonic()

    asset = await api.wait_asset(asset_id, within=30)
    # the promise, on the service's own clock (its event log, ms precision): ready
    # within 2 s of the window closing, that is WINDOW_S + 2 s after the disconnect;
    # the test's polling and a loaded machine's scheduling are not the service's
    events = await api.events({ls["id"], asset_id})
    disconnected = at(events, "live_stream.disconnected")
    ready = at(events, "asset.ready")
    assert ready - disconnected <= WINDOW_S + 2.0, f"ready {ready - disconnected:.2f}s after"
    assert ready - disconnected >= WINDOW_S - 0.05  # it did wait out the window
    # and nothing between the publisher's exit and the disconnect held it up
    assert time.monotonic() - stopped <= WINDOW_S + 10.0
    assert asset["source"] == "live" and asset["live_stream_id"] == ls["id"]
    assert asset["gaps"] == []

    pid = asset["playback_ids"][0]["id"]
    status, body, headers = await http_get(f"{svc.url}/play/{pid}.m3u8")
    assert status == 200 and headers.get("Access-Control-Allow-Origin") == "*"
    multivariant = m3u8.loads(body.decode(), uri=f"{svc.url}/play/{pid}.m3u8")
    assert multivariant.is_variant
    media_url = multivariant.playlists[0].absolute_uri
    status, body, _ = await http_get(media_url)
    assert status == 200
    text = body.decode()
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    vod = m3u8.loads(text, uri=media_url)
    assert vod.is_endlist and vod.segment_map
    total = sum(s.duration for s in vod.segments)
    target = float(vod.target_duration)
    assert abs(total - 10.0) <= target, (total, target)
    assert abs(asset["duration_s"] - total) <= 0.1
    assert not tags(text, "#EXT-X-DISCONTINUITY")
    await ffmpeg_decode(f"{svc.url}/play/{pid}.m3u8")  # the VOD plays end to end

    status, jpeg, headers = await http_get(f"{svc.url}/thumb/{pid}.jpg?time=3")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert jpeg[:3] == b"\xff\xd8\xff" and jpeg.rstrip(b"\0")[-2:] == b"\xff\xd9"
    (tmp_path / "t.jpg").write_bytes(jpeg)
    probe = await ffprobe(tmp_path / "t.jpg")
    assert probe["streams"][0]["codec_name"] == "mjpeg"

    await api.wait_asset(asset_id, "ready", field="mp4_status", within=60)
    status, mp4, headers = await http_get(f"{svc.url}/play/{pid}/download.mp4", within=30)
    assert status == 200, mp4[:300]
    (tmp_path / "d.mp4").write_bytes(mp4)
    probe = await ffprobe(tmp_path / "d.mp4")
    kinds = sorted(s["codec_type"] for s in probe["streams"])
    assert kinds == ["audio", "video"]
    assert abs(float(probe["format"]["duration"]) - 10.0) <= target
    await ffmpeg_decode(str(tmp_path / "d.mp4"))


async def test_a_reconnect_inside_the_window_makes_one_asset_with_one_gap(
    svc: ServiceProcess, tmp_path: Path
) -> None:
    api = Api(svc)
    window = 4.0
    ls = await api.live_stream(reconnect_window_s=window)
    url = rtmp_url(svc, ls["stream_key"])
    first = await Publisher.start(url, 4, log=tmp_path / "ff1.log")
    live = await api.wait_stream_status(ls["id"], "active", within=20)
    asset_id = live["active_asset_id"]
    assert await first.wait() == 0
    await asyncio.sleep(1.0)
    second = await Publisher.start(url, 4, log=tmp_path / "ff2.log")
    assert await second.wait() == 0
    asset = await api.wait_asset(asset_id, within=30)

    stream = await api.ok("GET", f"/v1/live-streams/{ls['id']}")
    assert stream["recent_asset_ids"] == [asset_id]
    assert stream["active_asset_id"] is None
    assert len(asset["gaps"]) == 1, asset["gaps"]
    gap = asset["gaps"][0]
    assert 3.0 <= gap["at_s"] <= 5.0, gap
    assert gap["duration_s"] >= 0.5, gap

    pid = asset["playback_ids"][0]["id"]
    status, body, _ = await http_get(f"{svc.url}/play/{pid}/media.m3u8")
    assert status == 200
    text = body.decode()
    assert len(tags(text, "#EXT-X-DISCONTINUITY")) == 1, text
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    total = sum(s.duration for s in m3u8.loads(text).segments)
    assert abs(total - 8.0) <= 2.0, total
    await ffmpeg_decode(f"{svc.url}/play/{pid}.m3u8")


@pytest.mark.parametrize("action", ["complete", "disable"])
async def test_complete_or_disable_ends_the_broadcast_at_once(
    svc: ServiceProcess, tmp_path: Path, action: str
) -> None:
    api = Api(svc)
    ls = await api.live_stream(reconnect_window_s=60)  # the window must not matter
    pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), 30, log=tmp_path / "ff.log")
    try:
        live = await api.wait_stream_status(ls["id"], "active", within=20)
        pid = ls["playback_ids"][0]["id"]

        async def media_s() -> float:
            status, body, _ = await http_get(f"{svc.url}/play/{pid}/media.m3u8")
            text = body.decode() if status == 200 else ""
            return sum(float(d) for d in re.findall(r"#EXTINF:([\d.]+)", text))

        # 2 s of media recorded (not 3 s of wall clock: a loaded CI starves ffmpeg)
        await poll(media_s, lambda s: s >= 2.0, within=30, what="2 s of media")
        t0 = time.monotonic()
        await api.ok("POST", f"/v1/live-streams/{ls['id']}/{action}")
        asset = await api.wait_asset(live["active_asset_id"], within=10)
        assert time.monotonic() - t0 <= 2.0 + 0.5
        await pub.wait(within=10)  # the publisher was kicked
        assert not pub.running
    finally:
        await pub.stop()
    stream = await api.ok("GET", f"/v1/live-streams/{ls['id']}")
    assert stream["status"] == ("idle" if action == "complete" else "disabled")
    assert stream["active_asset_id"] is None
    assert asset["duration_s"] >= 2.0
    pid = asset["playback_ids"][0]["id"]
    status, body, _ = await http_get(f"{svc.url}/play/{pid}/media.m3u8")
    assert status == 200 and body.decode().rstrip().endswith("#EXT-X-ENDLIST")


async def test_a_granted_publisher_that_sends_no_media_does_not_leave_a_broadcast_open(
    svc: ServiceProcess,
) -> None:
    """Publish is granted (connected, asset created) but the peer leaves before any
    media: the broadcast must still end, not stay `preparing` forever."""
    from control.live import GRANT_TIMEOUT_S
    from tests.ingest.rtmp.rtmpclient import publish_prologue

    api = Api(svc)
    ls = await api.live_stream(reconnect_window_s=1)
    hello, _ = publish_prologue(ls["stream_key"])
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.rtmp_port)
    writer.write(hello)
    await writer.drain()
    granted = await poll(
        lambda: api.ok("GET", f"/v1/live-streams/{ls['id']}"),
        lambda s: bool(s["active_asset_id"]),
        within=10,
        what="the publish grant",
    )
    asset_id = granted["active_asset_id"]
    writer.close()  # gone before sending a single tag
    del reader
    asset = await api.wait_asset(asset_id, "errored", within=GRANT_TIMEOUT_S + 10)
    assert "media" in asset["error"]["message"]
    stream = await api.ok("GET", f"/v1/live-streams/{ls['id']}")
    assert stream["status"] == "idle" and stream["active_asset_id"] is None


async def test_a_second_publisher_takes_over_the_same_broadcast(
    svc: ServiceProcess, tmp_path: Path
) -> None:
    api = Api(svc)
    ls = await api.live_stream(reconnect_window_s=1)
    url = rtmp_url(svc, ls["stream_key"])
    first = await Publisher.start(url, 30, log=tmp_path / "ff1.log")
    second: Publisher | None = None
    try:
        live = await api.wait_stream_status(ls["id"], "active", within=20)
        await asyncio.sleep(2.0)
        second = await Publisher.start(url, 4, log=tmp_path / "ff2.log")
        await first.wait(within=10)  # the old connection is closed
        assert second.running
        during = await api.ok("GET", f"/v1/live-streams/{ls['id']}")
        assert during["status"] == "active"
        assert during["active_asset_id"] == live["active_asset_id"]
        assert await second.wait() == 0
    finally:
        await first.stop()
        if second is not None:
            await second.stop()
    asset = await api.wait_asset(live["active_asset_id"], within=20)
    assert asset["duration_s"] >= 5.0, asset
    stream = await api.ok("GET", f"/v1/live-streams/{ls['id']}")
    assert stream["recent_asset_ids"] == [asset["id"]]
