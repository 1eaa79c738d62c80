"""Issue 3, the browser: hls.js in headless Chromium plays `/watch/{playback_id}`
of a live RTMP broadcast in lowLatencyMode, and the page (window.onairStats,
realtime/static/watch.js) reports a live latency under 3 s."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import pytest

from tests.e2e._media import Publisher
from tests.e2e._service import Api, ServiceProcess, rtmp_url
from tests.support.chromium import chromium_available, chromium_page

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(150),
    pytest.mark.skipif(not chromium_available(), reason="chromium is not installed"),
]


async def test_hls_js_plays_the_watch_page_at_low_latency(tmp_path: Path) -> None:
    svc = ServiceProcess(tmp_path / "data")
    pub: Publisher | None = None
    try:
        await asyncio.to_thread(svc.start, 60.0)
        api = Api(svc)
        ls = await api.live_stream()
        pid = ls["playback_ids"][0]["id"]
        pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), 60, log=tmp_path / "ff.log")
        await api.wait_stream_status(ls["id"], "active", within=20)

        async with chromium_page(f"{svc.url}/watch/{pid}") as page:
            await page.wait_for(
                "window.onairStats && window.onairStats.playing"
                " && window.onairStats.latency !== null",
                timeout_s=45,
            )
            engine = await page.evaluate("window.onairStats.engine")
            assert str(engine).startswith("hls.js"), engine
            assert await page.evaluate("window.onairHls.config.lowLatencyMode") is True
            await asyncio.sleep(3.0)  # let it settle at its target
            samples: list[float] = []
            for _ in range(12):
                stats = await page.evaluate(
                    "({latency: onairStats.latency, playing: onairStats.playing,"
                    " t: onairStats.currentTime, fatal: onairStats.fatalErrors})"
                )
                assert stats["playing"], stats
                samples.append(float(stats["latency"]))
                await asyncio.sleep(0.5)
            t_end = await page.evaluate("onairStats.currentTime")
            assert t_end > stats["t"] - 0.01  # the video keeps moving
            assert stats["fatal"] == 0, await page.evaluate("onairStats.errors")
        median = statistics.median(samples)
        assert 0 < median < 3.0, samples
        print(f"hls.js latency: median {median:.2f}s, samples {samples}")
    finally:
        if pub is not None:
            await pub.stop()
        if svc.proc is not None:
            await asyncio.to_thread(svc.stop, 15.0)
