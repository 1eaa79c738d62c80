"""Viewer analytics against the real `onair serve` (issue 17): views from CMCD,
beacons and bare requests (`GET /v1/views`), their metrics over time
(`GET /v1/metrics/{metric}/timeseries`), concurrent viewers in a stream's
health, and beacons refused as they must be (a signed id without its token,
a malformed or oversized body, a flood) with memory bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.e2e._media import Publisher, poll
from tests.e2e._service import Api, ServiceProcess, rtmp_url, start_service, stop_service
from tests.support.chromium import chromium_available, chromium_page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FAST = {"ONAIR_VIEW_FLUSH_S": "0.5", "ONAIR_VIEW_IDLE_S": "6"}


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    s = await start_service(tmp_path, FAST)
    yield s
    await stop_service(s)


async def views(api: Api, **where: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({**where, "limit": 100})
    return list((await api.ok("GET", f"/v1/views?{query}"))["data"])


async def series(api: Api, metric: str, live_stream_id: str) -> list[dict[str, Any]]:
    body = await api.ok(
        "GET", f"/v1/metrics/{metric}/timeseries?live_stream_id={live_stream_id}&interval=minute"
    )
    return list(body["data"])


async def post_beacon(
    session: aiohttp.ClientSession, url: str, body: Any, **headers: str
) -> aiohttp.ClientResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(url, data=data, headers={"Content-Type": "text/plain", **headers}) as r:
        await r.read()
        return r


@contextlib.asynccontextmanager
async def broadcast(
    svc: ServiceProcess, tmp_path: Path, seconds: float
) -> AsyncIterator[tuple[Api, dict[str, Any], str, Publisher]]:
    """A live stream with ffmpeg publishing to it: (api, stream, playback id, ffmpeg)."""
    api = Api(svc)
    ls = await api.live_stream()
    pub = await Publisher.start(rtmp_url(svc, ls["stream_key"]), seconds, log=tmp_path / "ff.log")
    try:
        await api.wait_stream_status(ls["id"], "active", within=20)
        yield api, ls, ls["playback_ids"][0]["id"], pub
    finally:
        await pub.stop()


async def test_a_scripted_player_and_a_silent_one_make_the_views_they_should(
    svc: ServiceProcess, tmp_path: Path
) -> None:
    async with broadcast(svc, tmp_path, 60) as (api, ls, pid, _pub):
        play = f"{svc.url}/play/{pid}"
        cmcd = urllib.parse.quote('ot=m,sf=h,sid="sc-1",st=l,su')
        async with aiohttp.ClientSession(headers={"User-Agent": "scripted/1"}) as s:
            # CMCD as the query argument, then as headers (ltc: 1.8 s behind live)
            async with s.get(f"{play}.m3u8?CMCD={cmcd}") as r:
                assert r.status == 200
            headers = {"CMCD-Session": 'sid="sc-1",st=l', "CMCD-Request": "ltc=1800,bl=900"}
            async with s.get(f"{play}/media.m3u8", headers=headers) as r:
                assert r.status == 200
            # the player's clock is an hour ahead of the server's: times are its own
            base = time.time() * 1000 + 3_600_000
            beacon = f"{svc.url}/beacon/{pid}"
            first = {
                "session_id": "sc-1",
                "sent_at": base + 8000,
                "events": [
                    {"type": "start", "at": base, "player": "scripted", "tracking": "dropped"},
                    {"type": "first_frame", "at": base + 1234},
                    {"type": "quality", "at": base + 1234, "rendition": "360p", "bitrate": 660},
                    {"type": "stall_start", "at": base + 5000},
                    {"type": "stall_end", "at": base + 7500},
                ],
            }
            assert (await post_beacon(s, beacon, first)).status == 204
            end = {"session_id": "sc-1", "sent_at": base + 10_000,
                   "events": [{"type": "end", "at": base + 10_000}]}  # fmt: skip
            assert (await post_beacon(s, beacon, end)).status == 204
        # a player that reports nothing: counted from its requests
        async with aiohttp.ClientSession(headers={"User-Agent": "silent/1"}) as s:
            for _ in range(4):
                async with s.get(f"{play}/media.m3u8") as r:
                    assert r.status == 200
                await asyncio.sleep(0.5)

        def both(vs: list[dict[str, Any]]) -> bool:
            # (the silent one's watch time is written every six flushes)
            return (
                len(vs) == 2
                and any(v["measured"] and v["ended_at"] for v in vs)
                and any(not v["measured"] and v["watch_time_ms"] >= 1000 for v in vs)
            )

        got = await poll(lambda: views(api, live_stream_id=ls["id"]), both, within=10)
        (scripted,) = [v for v in got if v["measured"]]
        (silent,) = [v for v in got if not v["measured"]]
        assert scripted["startup_time_ms"] == 1234
        assert (scripted["rebuffer_count"], scripted["rebuffer_ms"]) == (1, 2500)
        assert 9_900 <= scripted["watch_time_ms"] <= 10_100, scripted
        assert scripted["latency_s"] == 1.8 and scripted["player"] == "scripted"
        assert scripted["renditions"] == ["360p"] and scripted["average_bitrate_kbps"] == 660
        assert scripted["playback_id"] == pid and scripted["errors"] == 0
        assert silent["startup_time_ms"] is None and silent["ended_at"] is None
        assert silent["watch_time_ms"] >= 1000 and silent["live_stream_id"] == ls["id"]
        # filtered by playback id the same; by player family, the one that said;
        # by another stream, nothing
        assert {v["id"] for v in await views(api, playback_id=pid)} == {v["id"] for v in got}
        assert [v["id"] for v in await views(api, player="scripted")] == [scripted["id"]]
        assert len(await views(api, node=scripted["node"])) == 2
        other = await api.live_stream()
        assert await views(api, live_stream_id=other["id"]) == []

        # the silent viewer is still there
        health = await api.ok("GET", f"/v1/live-streams/{ls['id']}/health")
        assert health["viewers"] == 1, health
        points = await series(api, "viewers", ls["id"])
        assert max(p["value"] for p in points) == 2 and len(points) >= 60
        startup = [p for p in await series(api, "startup_time", ls["id"]) if p["count"]]
        assert [p["value"] for p in startup] == [1234]

        async def bitrate() -> list[dict[str, Any]]:
            return [p for p in await series(api, "ingest_bitrate", ls["id"]) if p["count"]]

        (minute, *_rest) = await poll(bitrate, bool, within=15, what="an ingest minute")
        assert 300 < minute["value"] < 1500, minute  # 600k video + 64k audio
        # the silent one stops asking: its view ends where it stood
        await poll(
            lambda: views(api, live_stream_id=ls["id"]),
            lambda vs: all(v["ended_at"] for v in vs),
            within=15,
            what="the silent view's idle cut",
        )
        health = await api.ok("GET", f"/v1/live-streams/{ls['id']}/health")
        assert health["viewers"] == 0, health

        # one timeline: the stream's events with the key that caused them, the
        # scripted viewer's rebuffer, and the series
        ops = await api.ok("POST", "/v1/api-keys", {"scope": "write", "name": "ops-bot"})
        status, _ = await api.call(
            "PATCH", f"/v1/live-streams/{ls['id']}", {"name": "renamed"}, key=ops["key"]
        )
        assert status == 200
        line = await api.ok("GET", f"/v1/live-streams/{ls['id']}/timeline")
        types = [e["type"] for e in line["events"]]
        assert "live_stream.connected" in types and "live_stream.active" in types, types
        (updated,) = [e for e in line["events"] if e["type"] == "live_stream.updated"]
        assert updated["actor"] == {"api_key_id": ops["id"], "name": "ops-bot"}, updated
        (connected, *_) = [e for e in line["events"] if e["type"] == "live_stream.connected"]
        assert connected["actor"] is None  # the publisher, not an operator
        (rebuffer,) = [e for e in line["events"] if e["type"] == "view.rebuffer"]
        assert rebuffer["data"]["duration_ms"] == 2500
        assert set(line["series"]) == {
            "viewers", "startup_time", "rebuffer_percentage", "ingest_bitrate"
        }  # fmt: skip
        assert any(p["value"] for p in line["series"]["ingest_bitrate"])
        assert max(p["value"] for p in line["series"]["viewers"]) == 2


async def test_beacons_are_refused_when_they_must_be_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    svc = await start_service(tmp_path, {**FAST, "ONAIR_MAX_VIEWS": "10"})
    try:
        api = Api(svc)
        key = await api.ok("POST", "/v1/signing-keys", {})
        signed = await api.live_stream(playback_policy="signed")
        spid = signed["playback_ids"][0]["id"]
        now = int(time.time())
        claims = {"sub": spid, "aud": "v", "exp": now + 600, "iat": now - 1}
        good = jwt.encode(claims, key["private_key"], algorithm="RS256", headers={"kid": key["id"]})
        thumb = jwt.encode(
            {**claims, "aud": "t"},
            key["private_key"],
            algorithm="RS256",
            headers={"kid": key["id"]},
        )
        url = f"{svc.url}/beacon/{spid}"
        hello = {"session_id": "s-1", "events": [{"type": "start", "at": time.time() * 1000}]}
        async with aiohttp.ClientSession() as s:
            async with s.options(url) as r:
                assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
            assert (await post_beacon(s, url, hello)).status == 403
            assert (await post_beacon(s, f"{url}?token={thumb}", hello)).status == 403
            assert (await post_beacon(s, f"{url}?token={good}x", hello)).status == 403
            r = await post_beacon(s, url, hello, Authorization=f"Bearer {good}")
            assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "*"
            assert (await post_beacon(s, f"{url}?token={good}", b"{not json")).status == 400
            bad = {"session_id": "s-1", "events": [{"type": "play", "at": 1}]}
            async with s.post(f"{url}?token={good}", data=json.dumps(bad)) as r:
                assert r.status == 400 and "type" in (await r.json())["error"]["message"]
            huge = {"session_id": "s-1", "pad": "x" * 20_000}
            assert (await post_beacon(s, f"{url}?token={good}", huge)).status == 413
            assert (await post_beacon(s, f"{svc.url}/beacon/nope", hello)).status == 404

            # a flood from one address: past the burst, 429; the node tracks at most
            # ONAIR_MAX_VIEWS views, whatever it was sent
            statuses = []
            for i in range(40):
                body = {"session_id": f"flood-{i}", "events": []}
                statuses.append((await post_beacon(s, f"{url}?token={good}", body)).status)
        assert 429 in statuses and statuses.count(204) >= 15, statuses
        await asyncio.sleep(1.5)
        stored = await views(api, playback_id=spid)
        assert len(stored) == 10, len(stored)
        status, metrics = await api.call("GET", "/metrics")
        assert status == 200
        text = metrics.decode() if isinstance(metrics, bytes) else str(metrics)
        dropped = re.search(r"^onair_views_dropped_total (\S+)$", text, re.M)
        assert dropped is not None and float(dropped.group(1)) >= 5, text[-2000:]
    finally:
        await stop_service(svc)


@pytest.mark.skipif(not chromium_available(), reason="chromium is not installed")
async def test_the_watch_page_reports_one_view_and_a_frozen_publishers_rebuffer(
    svc: ServiceProcess, tmp_path: Path
) -> None:
    async with broadcast(svc, tmp_path, 120) as (api, ls, pid, pub):
        async with chromium_page(f"{svc.url}/watch/{pid}") as page:
            await page.wait_for("window.onairStats && window.onairStats.playing", timeout_s=45)
            sid = await page.evaluate("window.onairStats.sessionId")
            await asyncio.sleep(20)

            async def measured() -> list[dict[str, Any]]:
                return [v for v in await views(api, playback_id=pid) if v["measured"]]

            (view,) = await poll(measured, lambda vs: len(vs) == 1, within=5)
            assert view["player"] == "hls.js" and view["startup_time_ms"] is not None
            assert 0 < view["startup_time_ms"] < 10_000, view
            assert view["rebuffer_count"] == 0, view
            assert 19_000 <= view["watch_time_ms"] <= 35_000, view
            # CMCD came with the requests (one session id for both): a bitrate;
            # the beacons carry the latency to live (program date time)
            assert view["average_bitrate_kbps"] is not None, view
            assert view["latency_s"] is not None and 0 < view["latency_s"] < 10, view

            pub.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(3)
            pub.proc.send_signal(signal.SIGCONT)
            await page.wait_for("window.onairStats.playing", timeout_s=20)
            await asyncio.sleep(5)
            await page.navigate("about:blank")  # pagehide: the `end` beacon
            (view,) = await poll(
                measured, lambda vs: len(vs) == 1 and vs[0]["ended_at"] is not None, within=10
            )
        assert view["rebuffer_count"] == 1, view
        assert 1_000 <= view["rebuffer_ms"] <= 5_000, view
        assert view["id"] and sid
        assert [v for v in await views(api, playback_id=pid) if not v["measured"]] == []
        stalls = [p for p in await series(api, "rebuffer_percentage", ls["id"]) if p["count"]]
        assert any(p["value"] and p["value"] > 0 for p in stalls), stalls
        # and on the stream's timeline: the rebuffer, as long as the view's
        line = await api.ok("GET", f"/v1/live-streams/{ls['id']}/timeline")
        (rebuffer,) = [e for e in line["events"] if e["type"] == "view.rebuffer"]
        assert abs(rebuffer["data"]["duration_ms"] - view["rebuffer_ms"]) <= 1, (rebuffer, view)
