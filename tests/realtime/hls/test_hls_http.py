"""LL-HLS over HTTP on loopback, served by the aiohttp handlers and by the playback
edge alike, with a synthetic live feed through the real hub and LiveHlsManager:
blocking reload promptness, 400 beyond the edge, 503 on timeout, delta updates,
preload-hinted parts, cache/CORS headers, reconnects and the end."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import m3u8
import pytest
from aiohttp import web

from ingest.hub import Hub
from realtime.hls.edge import EdgeRoute, EdgeSite, Resolve
from realtime.hls.http import IMMUTABLE, add_test_routes
from realtime.hls.live import LiveHls
from realtime.hls.manager import LiveHlsManager
from realtime.segments import FIRST_MSN, InitSegment, Part, Segment
from tests.realtime.media import Collect, feed_realtime, synthetic_tracks, synthetic_units


@dataclass
class Env:
    hub: Hub
    manager: LiveHlsManager
    base: str
    http: aiohttp.ClientSession
    recorders: list[Collect] = field(default_factory=list)
    playable: list[tuple[str, int]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(
        self, stream_id: str, seconds: float, *, start_ms: int = 0, speed: float = 1.0
    ) -> LiveHls:
        pub = self.hub.publish(stream_id, synthetic_tracks(), source="test")
        units = synthetic_units(seconds, start_ms=start_ms, wallclock0=time.time())
        self.tasks.append(asyncio.create_task(feed_realtime(pub, units, speed=speed)))
        live = self.manager.get(stream_id)
        assert live is not None
        return live

    async def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        async with self.http.get(self.base + path) as r:
            return r.status, dict(r.headers), await r.read()


def edge_resolver(manager: LiveHlsManager) -> Resolve:
    """Public playback by stream id, as `add_test_routes` mounts it."""

    def resolve(playback_id: str, token: str | None) -> EdgeRoute | None:
        live = manager.get(playback_id)
        suffix = "?" + urllib.parse.urlencode({"token": token}) if token else ""
        return EdgeRoute(live, playback_id, suffix) if live is not None else None

    return resolve


@pytest.fixture(params=["aiohttp", "edge"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    """The same specification holds served by the aiohttp handlers and by the edge."""
    recorders: list[Collect] = []

    def sinks(stream_id: str) -> list[Collect]:
        recorders.append(Collect())
        return [recorders[-1]]

    playable: list[tuple[str, int]] = []
    manager = LiveHlsManager(
        sink_factory=sinks, linger_s=1.0, on_playable=lambda s, g: playable.append((s, g))
    )
    hub = Hub(manager)
    app = web.Application()
    add_test_routes(app, manager.get)
    runner = web.AppRunner(app)
    await runner.setup()
    if request.param == "edge":
        site: web.TCPSite = EdgeSite(runner, "127.0.0.1", 0, resolve=edge_resolver(manager))
    else:
        site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as http:
        e = Env(hub, manager, f"http://127.0.0.1:{port}", http, recorders, playable=playable)
        try:
            yield e
        finally:
            for t in e.tasks:
                t.cancel()
            await manager.close()
            await runner.cleanup()


async def test_blocking_reload_answers_within_300ms_of_the_part(env: Env) -> None:
    live = env.start("s", 6.0)
    completed: dict[tuple[int, int], float] = {}
    live.listeners.append(lambda p: completed.setdefault((p.msn, p.index), time.monotonic()))
    assert await live.wait_media(timeout_s=5)
    delays = []
    for _ in range(12):
        msn, part = live.next_part()
        status, headers, body = await env.get(f"/play/s/media.m3u8?_HLS_msn={msn}&_HLS_part={part}")
        answered = time.monotonic()
        assert status == 200
        pl = m3u8.loads(body.decode())
        uris = [p.uri for s in pl.segments for p in s.parts]
        if (msn, part) in completed:
            assert f"{msn}.{part}.m4s" in uris
            delays.append(answered - completed[(msn, part)])
        else:  # the segment closed without that part: the next segment's first part is in
            assert f"{msn + 1}.0.m4s" in uris
        assert "max-age" in headers["Cache-Control"]
    assert len(delays) >= 8
    assert max(delays) < 0.3, delays
    print("blocking reload delays ms", [round(d * 1000, 1) for d in delays])


async def test_blocking_on_a_whole_segment_and_400_far_beyond_the_edge(env: Env) -> None:
    live = env.start("s", 4.0)
    assert await live.wait_media(timeout_s=5)
    edge = live.last_msn
    status, _, body = await env.get(f"/play/s/media.m3u8?_HLS_msn={edge + 1}")
    assert status == 200
    assert live.last_complete_msn >= edge + 1
    assert f"{edge + 1}.m4s" in body.decode().splitlines()
    far = live.last_msn + 3
    t0 = time.monotonic()
    status, headers, _ = await env.get(f"/play/s/media.m3u8?_HLS_msn={far}&_HLS_part=0")
    assert status == 400 and time.monotonic() - t0 < 0.2
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert (await env.get("/play/s/media.m3u8?_HLS_part=1"))[0] == 400
    assert (await env.get("/play/s/media.m3u8?_HLS_msn=abc"))[0] == 400


async def test_blocking_request_times_out_with_503(env: Env) -> None:
    live = env.start("s", 1.5)
    await env.tasks[-1]
    await asyncio.sleep(0.05)
    live.blocking_timeout = lambda: 0.3  # type: ignore[method-assign]
    msn, part = live.next_part()
    t0 = time.monotonic()
    status, _, _ = await env.get(f"/play/s/media.m3u8?_HLS_msn={msn}&_HLS_part={part + 1}")
    assert status == 503 and 0.25 < time.monotonic() - t0 < 1.5


async def test_delta_update(env: Env) -> None:
    live = env.start("s", 9.0, speed=8.0)
    await env.tasks[-1]
    full = m3u8.loads((await env.get("/play/s/media.m3u8"))[2].decode())
    status, _, body = await env.get(
        f"/play/s/media.m3u8?_HLS_msn={live.last_complete_msn}&_HLS_skip=YES"
    )
    delta = m3u8.loads(body.decode())
    assert status == 200 and delta.skip is not None and delta.skip.skipped_segments >= 1
    assert len(delta.segments) + delta.skip.skipped_segments == len(full.segments)


async def test_preload_hinted_part_blocks_until_it_exists(env: Env) -> None:
    live = env.start("s", 4.0)
    assert await live.wait_media(timeout_s=5)
    pl = m3u8.loads((await env.get("/play/s/media.m3u8"))[2].decode())
    hint = pl.preload_hint.uri
    msn, part = (int(x) for x in hint.split(".")[:2])
    assert live.get_part(msn, part) is None
    status, headers, body = await env.get(f"/play/s/{hint}")
    assert status == 200, "a hinted part always comes to exist"
    came = live.get_part(msn, part) or live.get_part(msn + 1, 0)  # a keyframe may overtake it
    assert came is not None and body == came.data
    assert headers["Cache-Control"] == IMMUTABLE
    assert headers["Content-Type"] == "video/iso.segment"
    # far in the future, or malformed: 404 at once
    t0 = time.monotonic()
    assert (await env.get(f"/play/s/{live.open_msn + 5}.0.m4s"))[0] == 404
    assert (await env.get("/play/s/nope.txt"))[0] == 404
    assert (await env.get("/play/s/init-99.mp4"))[0] == 404
    assert time.monotonic() - t0 < 0.3


async def test_headers_for_cdns_and_browsers(env: Env) -> None:
    live = env.start("s", 3.0)
    assert await live.wait_for(FIRST_MSN, None, timeout_s=5)
    status, h, body = await env.get("/play/s.m3u8?token=t1")
    assert status == 200 and h["Content-Type"].startswith("application/vnd.apple.mpegurl")
    assert h["Cache-Control"] == "public, max-age=1" and h["Access-Control-Allow-Origin"] == "*"
    assert "s/media.m3u8?token=t1" in body.decode()
    status, h, body = await env.get("/play/s/media.m3u8?token=t1")
    assert 'URI="init-1.mp4?token=t1"' in body.decode()
    assert h["Cache-Control"] == "public, max-age=1"
    status, h, body = await env.get("/play/s/init-1.mp4")
    assert status == 200 and h["Content-Type"] == "video/mp4" and h["Cache-Control"] == IMMUTABLE
    assert body[4:8] == b"ftyp"
    status, h, body = await env.get("/play/s/1.m4s")
    assert status == 200 and h["Cache-Control"] == IMMUTABLE and body[4:8] == b"moof"
    assert h["Content-Type"] == "video/iso.segment"
    status, h, _ = await env.get("/play/s/1.0.m4s")
    assert status == 200 and h["Access-Control-Allow-Origin"] == "*"
    status, h, _ = await env.get("/play/unknown.m3u8")
    assert status == 404 and h["Cache-Control"] == "no-store"


async def test_reconnect_keeps_one_playlist_with_a_discontinuity_and_never_404s(env: Env) -> None:
    live = env.start("s", 2.2)
    assert await live.wait_media(timeout_s=5)
    statuses: list[int] = []
    stop = asyncio.Event()

    async def viewer() -> None:
        while not stop.is_set():
            statuses.append((await env.get("/play/s/media.m3u8"))[0])
            await asyncio.sleep(0.1)

    poller = asyncio.create_task(viewer())
    await env.tasks[-1]
    pub = env.hub.get("s").publication  # type: ignore[union-attr]
    assert pub is not None
    pub.close("network")
    await asyncio.sleep(0.5)  # disconnected: the playlist stays up
    live2 = env.start("s", 2.2, start_ms=400_000)
    assert live2 is live
    await env.tasks[-1]
    await asyncio.sleep(0.1)
    stop.set()
    await poller
    assert statuses and set(statuses) == {200}
    pl = m3u8.loads((await env.get("/play/s/media.m3u8"))[2].decode())
    msns = [int(s.uri.split(".")[0]) for s in pl.segments if s.uri]
    assert msns == list(range(msns[0], msns[0] + len(msns)))
    assert [s.discontinuity for s in pl.segments].count(True) == 1
    assert env.playable == [("s", 1), ("s", 2)]  # first part of each generation
    # the broadcast ends: ENDLIST, the recorder got everything and on_end once
    env.manager.finish("s")
    await asyncio.sleep(0.1)
    pl = m3u8.loads((await env.get("/play/s/media.m3u8"))[2].decode())
    assert pl.is_endlist
    (rec,) = env.recorders
    assert rec.ended == 1 and len(rec.inits) == 1
    assert [s.msn for s in rec.segments] == list(range(1, len(rec.segments) + 1))
    assert isinstance(rec.inits[0], InitSegment) and isinstance(rec.segments[0], Segment)
    assert all(isinstance(p, Part) for p in rec.parts)
    await asyncio.sleep(1.1)
    assert env.manager.get("s") is None
    assert (await env.get("/play/s/media.m3u8"))[0] == 404


async def test_a_new_broadcast_after_finish_starts_a_fresh_playlist(env: Env) -> None:
    first = env.start("s", 1.5, speed=4.0)
    await env.tasks[-1]
    env.manager.finish("s")  # the reconnect window expired...
    env.hub.get("s").publication.close("gone")  # type: ignore[union-attr]
    second = env.start("s", 1.5, speed=4.0)  # ...and the broadcaster comes back at once
    await env.tasks[-1]
    await asyncio.sleep(0.1)
    assert second is not first and env.manager.get("s") is second
    assert first.ended and not second.ended
    assert second.first_msn == FIRST_MSN and second.has_media
    old, new = env.recorders
    assert old.ended == 1 and new.ended == 0 and new.inits
