"""A live window with a cold source keeps only the live edge in memory: the
segments whose parts the playlist lists (plus one target duration). Every
segment the playlist lists, and every part of those segments, stays fetchable
over HTTP — through the aiohttp handlers and through the playback edge — with
the very bytes the segmenter made, the older ones read back from the source."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from ingest.hub import Hub, HubObserver, Publication, Stream
from realtime.hls.disk_window import DiskWindow
from realtime.hls.edge import EdgeRoute, EdgeSite
from realtime.hls.http import add_test_routes
from realtime.hls.live import LiveHls
from realtime.hls.manager import LiveHlsManager, LiveOutput
from realtime.hls.playlist import PART_WINDOW_TARGETS
from realtime.segments import InitSegment, Part, Segment
from tests.realtime.media import feed_realtime, synthetic_tracks, synthetic_units


class Recording:
    """What a recorder would have stored: every segment, read back by msn."""

    def __init__(self) -> None:
        self.segments: dict[int, bytes] = {}
        self.reads: list[int] = []

    def on_init(self, init: InitSegment) -> None:
        pass

    def on_part(self, part: Part) -> None:
        pass

    def on_segment(self, segment: Segment) -> None:
        self.segments[segment.msn] = segment.join()

    def on_end(self) -> None:
        pass

    async def read_segment(self, msn: int) -> bytes | None:
        self.reads.append(msn)
        await asyncio.sleep(0.01)  # storage takes a moment
        return self.segments.get(msn)


@dataclass
class Served:
    base: str
    http: aiohttp.ClientSession
    live: LiveHls

    async def get(self, path: str) -> tuple[int, bytes]:
        async with self.http.get(self.base + path) as r:
            return r.status, await r.read()


async def serve_cold(
    request: pytest.FixtureRequest, source: Recording | DiskWindow, seconds: float
) -> AsyncIterator[Served]:
    manager = LiveHlsManager(linger_s=5.0)

    class Owner(HubObserver):
        """The broadcast's owner (control's lifecycle): serves with the cold source."""

        def publication_started(self, stream: Stream, publication: Publication) -> None:
            manager.serve(stream, LiveOutput(sinks=(source,), cold=source))

    hub = Hub(Owner())
    app = web.Application()
    add_test_routes(app, manager.get)
    runner = web.AppRunner(app)
    await runner.setup()

    def resolve(playback_id: str, token: str | None) -> EdgeRoute | None:
        live = manager.get(playback_id)
        return EdgeRoute(live, playback_id, "") if live is not None else None

    if request.param == "edge":
        site: web.TCPSite = EdgeSite(runner, "127.0.0.1", 0, resolve=resolve)
    else:
        site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    pub = hub.publish("s", synthetic_tracks(), source="test")
    live = manager.get("s")
    assert live is not None
    units = synthetic_units(seconds, wallclock0=time.time())
    feeding = asyncio.create_task(feed_realtime(pub, units, speed=16.0))
    async with aiohttp.ClientSession() as http:
        try:
            yield Served(f"http://127.0.0.1:{port}", http, live)
        finally:
            feeding.cancel()
            await manager.close()
            await runner.cleanup()


@pytest.fixture(params=["aiohttp", "edge"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    async for s in serve_cold(request, Recording(), 20.0):
        yield s


async def wait_segments(live: LiveHls, n: int) -> None:
    assert await live.wait_for(n, timeout_s=20), f"segment {n} never came"


async def test_only_the_live_edge_stays_in_memory(served: Served) -> None:
    live = served.live
    await wait_segments(live, 16)
    listed = list(live._segments)
    in_memory = [s for s in listed if any(p.data for p in s.parts)]
    hot_s = (PART_WINDOW_TARGETS + 1) * live.target_duration
    assert len(listed) >= 16
    assert sum(s.duration for s in in_memory) <= hot_s + live.target_duration
    assert all(live.is_cold(s.msn) for s in listed if s not in in_memory)
    # the newest segments keep their parts: nothing a player at the edge asks is read back
    assert not live.is_cold(listed[-1].msn) and not live.is_cold(listed[-3].msn)


async def test_every_listed_segment_and_part_is_fetchable(served: Served) -> None:
    live = served.live
    await wait_segments(live, 16)
    source = live.cold
    assert isinstance(source, Recording)
    msns = [s.msn for s in live._segments]
    cold = [m for m in msns if live.is_cold(m)]
    assert cold, "no segment went cold"
    for msn in msns:
        status, body = await served.get(f"/play/s/{msn}.m4s")
        assert status == 200 and body == source.segments[msn], msn
    assert set(cold) <= set(source.reads)
    # a part of a cold segment is a slice of it
    seg = live.get_segment(cold[0])
    assert seg is not None
    offset = 0
    for index in range(len(seg.parts)):
        status, body = await served.get(f"/play/s/{cold[0]}.{index}.m4s")
        assert status == 200
        assert body == source.segments[cold[0]][offset : offset + len(body)]
        offset += len(body)
    assert offset == len(source.segments[cold[0]])
    status, _ = await served.get(f"/play/s/{cold[0]}.{len(seg.parts)}.m4s")
    assert status == 404
    # the hot ones never touch the source
    reads = len(source.reads)
    newest = live.last_complete_msn  # (the feed runs at 16x: msns[-1] may be cold by now)
    assert not live.is_cold(newest)
    status, _ = await served.get(f"/play/s/{newest}.m4s")
    assert status == 200 and len(source.reads) == reads


async def test_a_segment_the_source_lost_is_a_404_not_a_hang(served: Served) -> None:
    live = served.live
    await wait_segments(live, 16)
    source = live.cold
    assert isinstance(source, Recording)
    lost = next(s.msn for s in live._segments if live.is_cold(s.msn))
    del source.segments[lost]
    live._cold_cache.clear()
    status, _ = await served.get(f"/play/s/{lost}.m4s")
    assert status == 404


@pytest.fixture(params=["aiohttp"])
async def on_disk(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[Served]:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    async for s in serve_cold(request, DiskWindow(tmp_path / "w", keep_s=12.0), 30.0):
        yield s


async def test_without_a_recording_the_window_lives_on_disk(on_disk: Served) -> None:
    live = on_disk.live
    await wait_segments(live, 20)
    window = live.cold
    assert isinstance(window, DiskWindow)
    await asyncio.sleep(0.3)  # the last writes land
    files = sorted(int(p.stem) for p in window.directory.glob("*.m4s"))
    # bounded: about keep_s of segments, the newest ones
    assert files and files[-1] >= live.last_complete_msn - 1 and len(files) <= 14, files
    cold = [s.msn for s in live._segments if live.is_cold(s.msn)]
    assert cold
    for msn in cold:
        if msn < files[0]:
            continue  # the live window is longer than this test's disk window
        status, body = await on_disk.get(f"/play/s/{msn}.m4s")
        assert status == 200 and body == (window.directory / f"{msn}.m4s").read_bytes()
    window.remove()
    await asyncio.sleep(0.3)
    assert not window.directory.exists()
