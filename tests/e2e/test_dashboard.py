"""The operator dashboard (issue 17) in headless Chromium against the real
`onair serve`, after a publish and a watch: the stream page's charts hold the
timeline's data (the uPlot series, and the series' colour in a screenshot's
pixels, not only the DOM), and a failed webhook delivery retried from the
webhooks page is retried (the receiver sees the attempt)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from tests.e2e._media import Publisher
from tests.e2e._service import Api, ServiceProcess, rtmp_url, start_service, stop_service
from tests.support.chromium import chromium_available, chromium_page
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not chromium_available(), reason="chromium is not installed"),
]

VIEWERS_RGB = (0x4F, 0xC3, 0xF7)
"""The viewers chart's stroke (dashboard.js CHARTS)."""


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as rx:
        yield rx


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    s = await start_service(
        tmp_path,
        {
            "ONAIR_VIEW_FLUSH_S": "0.5",
            "ONAIR_WEBHOOK_ALLOW_PRIVATE": "true",
            # a failed delivery waits 10 minutes: only the page's button retries it
            "ONAIR_WEBHOOK_BACKOFF_BASE_S": "600",
            "ONAIR_WEBHOOK_BACKOFF_JITTER": "0",
        },
    )
    yield s
    await stop_service(s)


def colour_pixels(png: Path, box: dict[str, float], rgb: tuple[int, int, int]) -> int:
    """Pixels within `box` (CSS pixels) of a screenshot close to `rgb`."""
    with av.open(str(png)) as container:
        frame = next(container.decode(video=0))
    image = frame.to_ndarray(format="rgb24").astype(int)
    x0, y0 = int(box["left"]), int(box["top"])
    x1, y1 = int(box["left"] + box["width"]), int(box["top"] + box["height"])
    area = image[y0:y1, x0:x1]
    distance = np.abs(area - np.array(rgb)).sum(axis=2)
    return int((distance < 60).sum())


async def test_the_dashboard_charts_a_watched_stream_and_retries_a_webhook(
    svc: ServiceProcess, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    api = Api(svc)
    # the receiver answers 500 (with the endpoint's secret known, it verifies each one)
    hook_url = receiver.url("/hook", status=500)
    endpoint = await api.ok(
        "POST", "/v1/webhook-endpoints", {"url": hook_url, "events": ["live_stream.created"]}
    )
    receiver.set("/hook", secret=endpoint["secret"])
    ls = await api.live_stream(name="studio")
    pid = ls["playback_ids"][0]["id"]
    await receiver.wait_for(1, path="/hook", within=20)

    pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), 90, log=tmp_path / "ff.log")
    try:
        await api.wait_stream_status(ls["id"], "active", within=20)
        # a watch: a player reporting its startup, and asking for the playlist
        now = time.time() * 1000
        beacon = {
            "session_id": "dash-1",
            "sent_at": now,
            "events": [{"type": "start", "at": now - 900}, {"type": "first_frame", "at": now}],
        }
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{svc.url}/beacon/{pid}", data=json.dumps(beacon)) as r:
                assert r.status == 204
            async with s.get(f"{svc.url}/play/{pid}/media.m3u8") as r:
                assert r.status == 200

        async with chromium_page(f"{svc.url}/dashboard") as page:
            await page.wait_for("window.onairDashboard && window.onairDashboard.ready")
            await page.evaluate(
                f"document.getElementById('apikey').value = {json.dumps(svc.admin_key)};"
                "document.getElementById('keyform').requestSubmit(); true"
            )
            # the list: live, with its ingest figures
            await page.wait_for(
                "document.body.innerText.includes('studio')"
                " && document.body.innerText.includes('kbit/s')",
                timeout_s=30,
            )
            await page.evaluate(f"location.hash = '#/streams/{ls['id']}'; true")
            await page.wait_for(
                "(function () { var c = onairDashboard.charts;"
                " return c.viewers && c.viewers.data[1].some(function (v) { return v > 0; })"
                " && c.ingest_bitrate.data[1].some(function (v) { return v > 0; })"
                " && c.startup_time.data[1].some(function (v) { return v > 0; }); })()",
                timeout_s=30,
            )
            startup = await page.evaluate(
                "onairDashboard.charts.startup_time.data[1].filter(function (v) { return v; })"
            )
            assert startup == [900], startup
            events = await page.evaluate(
                "onairDashboard.timeline.events.map(function (e) { return e.type; })"
            )
            assert "live_stream.active" in events, events
            # the plot area's upper 60 %: the line drawn there is data above
            # zero (an empty series would lie along the bottom)
            box: dict[str, Any] = await page.evaluate(
                "(function () { var r = onairDashboard.charts.viewers.over"
                ".getBoundingClientRect(); return {left: r.left, top: r.top, width: r.width,"
                " height: r.height * 0.6}; })()"
            )
            assert box["width"] > 200 and box["top"] + box["height"] <= 720, box
            shot = await page.screenshot(tmp_path / "stream.png")
            assert colour_pixels(shot, box, VIEWERS_RGB) > 10

            # the webhooks page: the failed delivery, retried from its button
            await page.evaluate("location.hash = '#/webhooks'; true")
            await page.wait_for("document.querySelector('button.retry') !== null", timeout_s=20)
            before = len(receiver.at("/hook"))
            await page.evaluate("document.querySelector('button.retry').click(); true")
            await receiver.wait_for(before + 1, path="/hook", within=20)
        assert all(r.verified for r in receiver.at("/hook"))
        (delivery,) = (await api.ok("GET", f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"))[
            "data"
        ]
        assert delivery["attempt_count"] >= 2, delivery
    finally:
        await pub.stop()
