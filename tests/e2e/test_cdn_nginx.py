"""LL-HLS through a CDN: Debian's nginx with `deploy/nginx/onair-cache.conf` in
front of the real `onair serve`. hls.js in headless Chromium plays the /watch
page through the cache while more viewers follow the same parts with blocking
requests; the origin sees one request per part, and one per blocking playlist,
however many viewers asked (nginx's access log says which requests went
upstream)."""

from __future__ import annotations

import asyncio
import collections
import re
from pathlib import Path

import aiohttp
import pytest

from tests.e2e._media import Publisher
from tests.e2e._service import Api, ServiceProcess, rtmp_url
from tests.support.chromium import chromium_available, chromium_page
from tests.support.nginx import NginxCache, nginx_binary

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not chromium_available(), reason="chromium is not installed"),
    pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed"),
]

HINT = re.compile(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="(\d+)\.(\d+)\.m4s"')
UPSTREAM = {"MISS", "EXPIRED", "BYPASS", "-"}
"""Cache statuses of requests nginx sent to the origin ("-": not cacheable)."""


async def viewer(base: str, pid: str, seconds: float) -> int:
    """An LL-HLS player's loop: the blocking playlist for the hinted part, then
    the part. Returns the parts it fetched."""
    fetched = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/play/{pid}/media.m3u8") as r:
            text = await r.text()
        while loop.time() < end:
            hint = HINT.search(text)
            assert hint, text
            msn, part = hint.groups()
            query = f"_HLS_msn={msn}&_HLS_part={part}"
            async with http.get(f"{base}/play/{pid}/media.m3u8?{query}") as r:
                assert r.status == 200
                text = await r.text()
            async with http.get(f"{base}/play/{pid}/{msn}.{part}.m4s") as r:
                assert r.status == 200 and await r.read()
                fetched += 1
    return fetched


async def test_hls_js_plays_through_nginx_and_the_origin_sees_one_request_per_part(
    tmp_path: Path,
) -> None:
    svc = ServiceProcess(tmp_path / "data")
    pub: Publisher | None = None
    try:
        await asyncio.to_thread(svc.start, 60.0)
        api = Api(svc)
        ls = await api.live_stream()
        pid = ls["playback_ids"][0]["id"]
        pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), 90, log=tmp_path / "ff.log")
        await api.wait_stream_status(ls["id"], "active", within=20)
        async with NginxCache(svc.port) as cdn:
            async with chromium_page(f"{cdn.url}/watch/{pid}") as page:
                await page.wait_for("window.onairStats && window.onairStats.playing", timeout_s=45)
                fetched = await asyncio.gather(*(viewer(cdn.url, pid, 8.0) for _ in range(4)))
                t0 = await page.evaluate("onairStats.currentTime")
                await asyncio.sleep(1.0)
                assert await page.evaluate("onairStats.currentTime") > t0  # still playing
                assert await page.evaluate("onairStats.fatalErrors") == 0
            log = cdn.log()
        assert min(fetched) >= 20  # each viewer followed the live edge part by part

        parts = [(c, u) for s, c, u in log if s == 200 and re.search(r"/\d+\.\d+\.m4s", u)]
        upstream = collections.Counter(u.split("?")[0] for c, u in parts if c in UPSTREAM)
        asked = collections.Counter(u.split("?")[0] for _c, u in parts)
        assert upstream and max(upstream.values()) == 1, upstream.most_common(3)
        shared = [uri for uri, n in asked.items() if n >= 4]  # four viewers and a browser
        assert len(shared) >= 20 and all(upstream[uri] == 1 for uri in shared)
        blocking = [(c, u) for s, c, u in log if s == 200 and "_HLS_msn=" in u]
        per_key = collections.Counter(u for c, u in blocking if c in UPSTREAM)
        assert per_key and max(per_key.values()) == 1, per_key.most_common(3)
        asked_keys = collections.Counter(u for _c, u in blocking)
        assert sum(1 for n in asked_keys.values() if n >= 4) >= 20
    finally:
        if pub is not None:
            await pub.stop()
        if svc.proc is not None:
            await asyncio.to_thread(svc.stop, 15.0)
