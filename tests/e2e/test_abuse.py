"""Abuse against the real `onair serve`, while a stream is published and watched:

* 2,000 idle or dripping connections from one address (127.0.0.2): that address
  holds its share (429 beyond), the dripping heads are cut at their deadline,
  and the LL-HLS viewer keeps getting parts while the API keeps answering;
* a thumbnail flood (random times, one address) is answered 429/503 beyond
  its rate and the render slots, never 500, and the viewer keeps playing;
* a WHEP offer flood from one address is answered 429 beyond its rate.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e._media import Publisher, make_file, next_part
from tests.e2e._service import Api, ServiceProcess, rtmp_url
from tests.support.abuse import ConnectionFlood, ThumbnailFlood

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


class Viewer:
    """An LL-HLS client doing blocking playlist reloads, part after part."""

    def __init__(self, media_url: str) -> None:
        self.media_url = media_url
        self.answers: list[tuple[float, float]] = []
        """(monotonic time, seconds the answer took)."""
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(self.media_url) as r:
                text = await r.text()
            while True:
                msn, part = next_part(text)
                t0 = time.monotonic()
                try:
                    async with s.get(
                        f"{self.media_url}?_HLS_msn={msn}&_HLS_part={part}",
                        timeout=aiohttp.ClientTimeout(total=10),
                    ) as r:
                        body = await r.text()
                        if r.status == 200:
                            text = body
                            self.answers.append((time.monotonic(), time.monotonic() - t0))
                            continue
                except (aiohttp.ClientError, TimeoutError):
                    pass
                self.failures += 1
                await asyncio.sleep(0.2)

    def longest_gap_since(self, since: float) -> float:
        times = [since] + [t for t, _ in self.answers if t >= since] + [time.monotonic()]
        return max(b - a for a, b in itertools.pairwise(times))


async def api_latencies(api: Api, path: str, seconds: float) -> list[float]:
    out: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        status, _ = await asyncio.wait_for(api.call("GET", path), 10)
        assert status == 200
        out.append(time.monotonic() - t0)
        await asyncio.sleep(0.1)
    return out


async def live(api: Api, svc: ServiceProcess, tmp_path: Path) -> tuple[Publisher, str]:
    ls = await api.live_stream(record=False)
    pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), 120, log=tmp_path / "ff.log")
    await api.wait_stream_status(ls["id"], "active", within=20)
    pid = ls["playback_ids"][0]["id"]
    return pub, f"{svc.url}/play/{pid}/media.m3u8"


@pytest.fixture
async def svc(tmp_path: Path) -> Any:
    s = ServiceProcess(tmp_path / "data", {"ONAIR_HTTP_HEAD_TIMEOUT_S": "3"})
    await asyncio.to_thread(s.start, 60)
    try:
        yield s
    finally:
        if s.proc is not None:
            await asyncio.to_thread(s.stop, 15)


async def test_a_connection_flood_from_one_address_hurts_nobody_else(
    svc: ServiceProcess, tmp_path: Path
) -> None:
    api = Api(svc)
    pub, media_url = await live(api, svc, tmp_path)
    viewer = Viewer(media_url)
    viewer.start()
    flood = ConnectionFlood("127.0.0.1", svc.port, connections=2000)
    try:
        await asyncio.sleep(2)
        await flood.start()
        attacked = time.monotonic()
        latencies = await api_latencies(api, "/v1/live-streams", 10)
        assert max(latencies) < 2.0, f"the API stalled: {max(latencies):.2f} s"
        assert viewer.longest_gap_since(attacked) < 2.5, "the viewer stalled"
        assert flood.refused["429"] > 1000, flood.refused
        assert flood.cut > 0, "dripping heads were never cut off"
        assert flood.held_now <= 256, "one address holds more than its share"
    finally:
        await flood.stop()
        await viewer.stop()
        await pub.stop()


async def test_thumbnail_and_whep_floods_are_refused_while_a_stream_plays(
    svc: ServiceProcess, tmp_path: Path
) -> None:
    api = Api(svc)
    src = await make_file(
        tmp_path / "vod.mp4",
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
        "-t", "6", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
    )  # fmt: skip
    up = await api.ok("POST", "/v1/uploads", {})
    async with aiohttp.ClientSession() as s:
        async with s.put(up["url"], data=await asyncio.to_thread(src.read_bytes)) as r:
            assert r.status == 200
            asset_id = (await r.json())["asset_id"]
    asset = await api.wait_asset(asset_id, within=60)
    vod_pid = asset["playback_ids"][0]["id"]

    pub, media_url = await live(api, svc, tmp_path)
    viewer = Viewer(media_url)
    viewer.start()
    thumbs = ThumbnailFlood(svc.url, vod_pid, 6.0, workers=16)
    try:
        await asyncio.sleep(2)
        await thumbs.start()
        attacked = time.monotonic()
        await asyncio.sleep(8)
        assert viewer.longest_gap_since(attacked) < 2.5, "the viewer stalled"
        # a WHEP offer flood from another address
        whep: dict[int, int] = {}
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.4", 0))
        async with aiohttp.ClientSession(connector=connector) as s:
            for _ in range(60):
                async with s.post(
                    f"{svc.url}/v1/whep/{vod_pid}",
                    data="v=0\r\n",
                    headers={"Content-Type": "application/sdp"},
                ) as r:
                    whep[r.status] = whep.get(r.status, 0) + 1
        assert whep.get(429, 0) >= 20, whep
    finally:
        await thumbs.stop()
        await viewer.stop()
        await pub.stop()
    statuses = thumbs.statuses
    assert statuses[200] > 0, statuses
    assert statuses[429] + statuses[503] > statuses[200], statuses
    assert not set(statuses) - {200, 429, 503}, statuses
    # the API still answers, and the thumbnails of a finished asset are kept
    assert (await api.call("GET", f"/v1/assets/{asset_id}"))[0] == 200
