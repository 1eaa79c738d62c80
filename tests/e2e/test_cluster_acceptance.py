"""Issue 14's acceptance, from outside: three `onair serve` nodes as separate
processes on separate ports, one redis-server, one S3 endpoint over HTTP
(moto's server), the clients users run.

ffmpeg publishes over RTMP to node A. Then, through the other nodes:

* `GET /v1/nodes` on C lists all three;
* WHEP on C (which does not ingest the stream) plays it: aiortc decodes frames;
* two headless Chromium participants join one room through B and C (one of
  them reaches the room's host through the other node) and each decodes the
  other's video; the participants are listed from A;
* hls.js in Chromium watches through B; A is SIGKILLed and the encoder
  reconnects to C one second later: the viewer plays on after at most one
  stall, without reloading the page, back within 3 s of live;
* SSE on B hears a live stream created through C at once;
* when the encoder stops, the broadcast is one ready asset in S3, its VOD
  playable through any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e._media import Publisher
from tests.e2e._service import Api, ServiceProcess, rtmp_url, sse_hears
from tests.rooms._chromium import Chromium, Page
from tests.support.chromium import chromium_available, chromium_page
from tests.support.redis_server import redis_server, redis_server_binary
from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.redis,
    pytest.mark.s3,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not chromium_available(), reason="chromium is not installed"),
    pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed"),
]

NAMES = ("node-a", "node-b", "node-c")


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[list[ServiceProcess]]:
    bucket = f"cluster-{uuid.uuid4().hex[:8]}"
    with redis_server() as redis_url, S3Server() as s3:
        nodes = []
        for name in NAMES:
            svc = ServiceProcess(
                tmp_path / name,
                {
                    "ONAIR_REDIS_URL": redis_url,
                    "ONAIR_NODE_ID": name,
                    "ONAIR_S3_ENDPOINT": s3.endpoint_url,
                    "ONAIR_S3_BUCKET": bucket,
                    "ONAIR_S3_REGION": REGION,
                    "ONAIR_S3_ACCESS_KEY": ACCESS_KEY,
                    "ONAIR_S3_SECRET_KEY": SECRET_KEY,
                    "ONAIR_S3_CREATE_BUCKET": "true",
                    "ONAIR_WEBRTC_HOSTS": "127.0.0.1",
                },
            )
            svc.extra_env["ONAIR_NODE_URL"] = svc.url
            nodes.append(svc)
        try:
            for svc in nodes:
                await asyncio.to_thread(svc.start, 60.0)
            for svc in nodes[1:]:
                svc.admin_key = nodes[0].admin_key  # one store: the first made the key
            yield nodes
        finally:
            for svc in nodes:
                if svc.proc is not None:
                    await asyncio.to_thread(svc.stop, 15.0)


async def whep_decodes(node: ServiceProcess, pid: str, origin: ServiceProcess) -> None:
    import av

    from ingest.webrtc.config import WebRtcConfig
    from tests.support.webrtc_client import delete_session, whep_play

    pc, location = await whep_play(f"{node.url}/v1/whep/{pid}", WebRtcConfig.loopback())
    try:
        assert location.startswith(origin.url), location  # 307 to where the media is
        video = next(t.receiver.track for t in pc.getTransceivers() if t.kind == "video")
        frames = [await asyncio.wait_for(video.recv(), 20) for _ in range(10)]
        assert all(isinstance(f, av.VideoFrame) for f in frames)
    finally:
        await delete_session(location)
        await pc.close()


async def room_through_two_nodes(api: dict[str, Api]) -> None:
    room = await api["node-a"].ok("POST", "/v1/rooms", {"empty_timeout_s": 5})
    rid = room["id"]
    browser = Chromium()
    await browser.start()
    pages: dict[str, Page] = {}

    async def listed() -> list[str]:
        got = await api["node-a"].ok("GET", f"/v1/rooms/{rid}/participants")
        return sorted(p["identity"] for p in got["data"])

    try:
        # ann's node hosts the room (the first participant's); ben, through
        # another node, is piped there
        for who, via in (("ann", "node-b"), ("ben", "node-c")):
            tok = await api[via].ok("POST", f"/v1/rooms/{rid}/tokens", {"identity": who})
            assert tok["join_url"].startswith(api[via].svc.url), tok
            pages[who] = await browser.new_page(tok["join_url"] + "&video=320x240")
            deadline = time.monotonic() + 30
            while who not in await listed():
                assert time.monotonic() < deadline, await listed()
                await asyncio.sleep(0.2)
        assert await listed() == ["ann", "ben"]
        # each decodes the other's video, advancing
        ok: set[str] = set()
        first: dict[str, float] = {}
        last: dict[str, Any] = {}
        deadline = time.monotonic() + 20
        while len(ok) < 2:
            assert time.monotonic() < deadline, f"not decoding: {last}"
            for who, other in (("ann", "ben"), ("ben", "ann")):
                s = last[who] = await pages[who].evaluate(
                    "window.onairRoom ? window.onairRoom.videoStats() : {}"
                )
                if other in s and s[other]["playing"] and s[other]["nonBlack"]:
                    t = first.setdefault(who, s[other]["currentTime"])
                    if s[other]["currentTime"] > t:
                        ok.add(who)
            await asyncio.sleep(0.2)
    finally:
        for page in pages.values():
            await page.close()
        await browser.close()
    await api["node-c"].ok("DELETE", f"/v1/rooms/{rid}")


async def test_three_nodes_serve_every_stream_room_and_viewer(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (a, b, c):
        api = {svc.extra_env["ONAIR_NODE_ID"]: Api(svc) for svc in (a, b, c)}
        nodes = {n["id"] for n in (await api["node-c"].ok("GET", "/v1/nodes"))["data"]}
        assert nodes == set(NAMES)

        # events across nodes: the bus, not a poll
        assert await sse_hears(b, api["node-c"]) < 1.0

        ls = await api["node-b"].live_stream(record=True, reconnect_window_s=60)
        pid = ls["playback_ids"][0]["id"]
        publishers = [
            await Publisher.start(rtmp_url(a, ls["stream_key"]), 300, log=tmp_path / "a.log")
        ]
        try:
            await api["node-c"].wait_stream_status(ls["id"], "active", within=30)
            await whep_decodes(c, pid, origin=a)
            await room_through_two_nodes(api)

            async with chromium_page(f"{b.url}/watch/{pid}") as page:
                await page.wait_for("window.onairStats && window.onairStats.playing", timeout_s=45)
                await asyncio.sleep(3)
                await asyncio.to_thread(a.kill)  # SIGKILL: no goodbye
                killed = time.monotonic()
                await publishers[0].stop()
                await asyncio.sleep(1.0)  # the encoder reconnects to another node
                publishers.append(
                    await Publisher.start(
                        rtmp_url(c, ls["stream_key"]), 300, log=tmp_path / "c.log"
                    )
                )
                # a stall: the picture stands still across two looks (0.5 s), not one
                # late look on a loaded machine
                stalls, still_since, last_t, latency = 0, None, -1.0, None
                counted = False
                while time.monotonic() - killed < 20:
                    s = await page.evaluate(
                        "({t: onairStats.currentTime, latency: onairStats.latency})"
                    )
                    now = time.monotonic()
                    if s["t"] > last_t + 0.01:
                        still_since, last_t, counted = None, s["t"], False
                    elif still_since is None:
                        still_since = now
                    elif not counted and now - still_since >= 0.45:
                        stalls, counted = stalls + 1, True
                    latency = s["latency"]
                    await asyncio.sleep(0.25)
                assert still_since is None or time.monotonic() - still_since < 1, "stuck"
                assert stalls <= 1, stalls
                assert latency is not None and latency < 3.0, latency
        finally:
            for pub in publishers:
                await pub.stop()

        # one broadcast, one asset in S3, playable from any node
        stream = await api["node-b"].wait_stream_status(ls["id"], "idle", within=90)
        assert len(stream["recent_asset_ids"]) == 1, stream
        asset = await api["node-c"].wait_asset(stream["recent_asset_ids"][0], "ready", within=60)
        assert asset["duration_s"] > 10, asset
        assert [g["reason"] for g in asset["gaps"]] in (["node_lost"], ["reconnect"]), asset
        vod = asset["playback_ids"][0]["id"]
        status, body = await api["node-b"].call("GET", f"/play/{vod}/media.m3u8")
        assert status == 200 and body.rstrip().endswith(b"#EXT-X-ENDLIST")
