"""A node dies under a live broadcast and its viewers (issue 14, item 3), against
two real `onair serve` nodes on one Redis: ffmpeg publishes to node A while
hls.js in Chromium watches through node B (B relays A's LL-HLS). A is
SIGKILLed; the encoder reconnects to B a second later; B continues the same
playlist (the next media sequence, a discontinuity) and the viewer keeps
playing without reloading the page — at most one stall, and back within 3 s
of live."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.e2e._media import Publisher
from tests.e2e._service import Api, ServiceProcess, rtmp_url
from tests.support.chromium import chromium_available, chromium_page
from tests.support.redis_server import redis_server, redis_server_binary

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.redis,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not chromium_available(), reason="chromium is not installed"),
    pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed"),
]


def node(tmp_path: Path, name: str, redis_url: str) -> ServiceProcess:
    svc = ServiceProcess(tmp_path / name, {"ONAIR_REDIS_URL": redis_url, "ONAIR_NODE_ID": name})
    svc.extra_env["ONAIR_NODE_URL"] = svc.url
    return svc


async def test_a_viewer_on_another_node_plays_through_the_origin_being_killed(
    tmp_path: Path,
) -> None:
    with redis_server() as redis_url:
        a, b = node(tmp_path, "node-a", redis_url), node(tmp_path, "node-b", redis_url)
        publishers: list[Publisher] = []
        try:
            await asyncio.to_thread(a.start, 60.0)
            await asyncio.to_thread(b.start, 60.0)
            b.admin_key = a.admin_key  # one store: A made the first admin key
            api_a, api_b = Api(a), Api(b)
            ls = await api_a.live_stream(record=False, reconnect_window_s=60)
            pid = ls["playback_ids"][0]["id"]
            publishers.append(
                await Publisher.start(rtmp_url(a, ls["stream_key"]), 120, log=tmp_path / "a.log")
            )
            await api_a.wait_stream_status(ls["id"], "active", within=30)
            nodes = {n["id"] for n in (await api_b.ok("GET", "/v1/nodes"))["data"]}
            assert nodes == {"node-a", "node-b"}

            async with chromium_page(f"{b.url}/watch/{pid}") as page:
                await page.wait_for("window.onairStats && window.onairStats.playing", timeout_s=45)
                await asyncio.sleep(3)

                await asyncio.to_thread(a.kill)  # SIGKILL: no goodbye
                killed = time.monotonic()
                await publishers[0].stop()
                await asyncio.sleep(1.0)  # the encoder reconnects to the other node
                publishers.append(
                    await Publisher.start(
                        rtmp_url(b, ls["stream_key"]), 120, log=tmp_path / "b.log"
                    )
                )

                # watch the player for 20 s: how long it stood still, and its latency
                stalls, still_since, last_t, latency = 0, None, -1.0, None
                while time.monotonic() - killed < 20:
                    s = await page.evaluate(
                        "({t: onairStats.currentTime, latency: onairStats.latency,"
                        " fatal: onairStats.fatalErrors})"
                    )
                    now = time.monotonic()
                    if s["t"] > last_t + 0.01:
                        still_since, last_t = None, s["t"]
                    elif still_since is None:
                        still_since = now
                        stalls += 1
                    latency = s["latency"]
                    await asyncio.sleep(0.25)
                assert still_since is None or time.monotonic() - still_since < 1, "stuck"
                print(f"failover: {stalls} stall(s), latency {latency}")
                assert stalls <= 1, stalls
                assert latency is not None and latency < 3.0, latency
                text = (await api_b.call("GET", f"/play/{pid}/media.m3u8"))[1]
                assert b"#EXT-X-DISCONTINUITY" in text  # the same playlist, continued
        finally:
            for pub in publishers:
                await pub.stop()
            for svc in (a, b):
                if svc.proc is not None:
                    await asyncio.to_thread(svc.stop, 15.0)
