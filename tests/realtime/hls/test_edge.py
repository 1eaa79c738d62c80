"""The playback edge: live LL-HLS served without aiohttp, everything else handed to
aiohttp on the same connection, nothing lost or mixed up on the way.

Served by the edge: plain GETs of /play/{id}.m3u8 and /play/{id}/{name} of a
live stream the resolver grants. Handed over (the connection then stays with
aiohttp): other paths and methods, unknown or refused ids, heads it does not
understand. Pipelined requests are answered in order; a waiting request costs
no task; shutdown closes what the edge still serves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from ingest.hub import Hub
from realtime.hls.edge import EdgeRequest, EdgeRoute, EdgeSite
from realtime.hls.live import LiveHls
from realtime.hls.manager import LiveHlsManager
from tests.realtime.media import feed_realtime, synthetic_tracks, synthetic_units


@dataclass
class Edge:
    hub: Hub
    manager: LiveHlsManager
    site: EdgeSite
    port: int
    observed: list[EdgeRequest]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    resolves: list[str] = field(default_factory=list)

    def start(self, stream_id: str, seconds: float) -> LiveHls:
        pub = self.hub.publish(stream_id, synthetic_tracks(), source="test")
        units = synthetic_units(seconds, wallclock0=time.time())
        self.tasks.append(asyncio.create_task(feed_realtime(pub, units)))
        live = self.manager.get(stream_id)
        assert live is not None
        return live

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    manager = LiveHlsManager(linger_s=1.0)
    hub = Hub(manager)
    app = web.Application()

    async def api(request: web.Request) -> web.Response:
        return web.json_response({"served_by": "aiohttp", "path": request.path})

    async def play_fallback(request: web.Request) -> web.Response:
        return web.Response(status=404, text="aiohttp: no such playback id\n")

    app.router.add_get("/v1/thing", api)
    app.router.add_post("/v1/thing", api)
    app.router.add_get("/play/{pid}/{name}", play_fallback)
    runner = web.AppRunner(app)
    await runner.setup()
    observed: list[EdgeRequest] = []
    resolves: list[str] = []

    def resolve(pid: str, token: str | None) -> EdgeRoute | Awaitable[EdgeRoute | None] | None:
        resolves.append(pid)
        if pid.startswith("slow-"):

            async def later() -> EdgeRoute | None:
                await asyncio.sleep(0.05)
                live = manager.get(pid.removeprefix("slow-"))
                return EdgeRoute(live, pid) if live is not None else None

            return later()
        live = manager.get(pid)
        return EdgeRoute(live, pid) if live is not None else None

    site = EdgeSite(runner, "127.0.0.1", 0, resolve=resolve, observe=observed.append)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    e = Edge(hub, manager, site, port, observed, resolves=resolves)
    try:
        yield e
    finally:
        for t in e.tasks:
            t.cancel()
        await manager.close()
        await runner.cleanup()


async def read_response(
    reader: asyncio.StreamReader, *, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if head_only:
        return status, headers, b""
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *extra, "", ""]
    return "\r\n".join(lines).encode()


async def test_live_playback_is_served_by_the_edge_and_the_rest_by_aiohttp(edge: Edge) -> None:
    live = edge.start("s", 5.0)
    assert await live.wait_media(timeout_s=5)
    reader, writer = await edge.connect()
    writer.write(get("/play/s.m3u8"))
    status, headers, body = await read_response(reader)
    assert status == 200 and b"#EXT-X-STREAM-INF" in body
    assert "server" not in headers  # not aiohttp's answer
    assert headers["x-request-id"].startswith("req_")
    writer.write(get("/play/s/media.m3u8"))
    status, headers, body = await read_response(reader)
    assert status == 200 and b"#EXT-X-PART" in body
    assert headers["access-control-allow-origin"] == "*"
    assert [o.route for o in edge.observed] == [
        "/play/{playback_id}.m3u8",
        "/play/{playback_id}/{name}",
    ]
    # an API call on the same connection goes to aiohttp, which keeps the connection
    writer.write(get("/v1/thing"))
    status, headers, body = await read_response(reader)
    assert status == 200 and b'"served_by": "aiohttp"' in body
    assert headers["server"].startswith("Python")
    writer.write(get("/play/s/media.m3u8"))
    status, headers, body = await read_response(reader)
    assert status == 404 and b"aiohttp" in body  # aiohttp's own /play route answered
    assert edge.site.edge.served == 2 and edge.site.edge.handed_over == 1
    writer.close()


async def test_a_held_request_is_answered_when_its_part_arrives(edge: Edge) -> None:
    live = edge.start("s", 6.0)
    assert await live.wait_media(timeout_s=5)
    completed: dict[tuple[int, int], float] = {}
    live.listeners.append(lambda p: completed.setdefault((p.msn, p.index), time.monotonic()))
    reader, writer = await edge.connect()
    delays = []
    for _ in range(6):
        msn, part = live.next_part()
        writer.write(get(f"/play/s/media.m3u8?_HLS_msn={msn}&_HLS_part={part}"))
        status, headers, body = await read_response(reader)
        answered = time.monotonic()
        assert status == 200
        if (msn, part) in completed:
            assert f'URI="{msn}.{part}.m4s"'.encode() in body
            delays.append(answered - completed[(msn, part)])
        assert headers["cache-control"].startswith("public, max-age=")
    assert delays and max(delays) < 0.3, delays
    # the preload-hinted part blocks until it exists, then comes whole
    msn, part = live.next_part()
    writer.write(get(f"/play/s/{msn}.{part}.m4s"))
    status, headers, body = await read_response(reader)
    assert status == 200 and body[4:8] in (b"moof", b"styp")
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    writer.close()


async def test_pipelined_requests_are_answered_in_order(edge: Edge) -> None:
    live = edge.start("s", 5.0)
    assert await live.wait_media(timeout_s=5)
    msn, part = live.next_part()
    reader, writer = await edge.connect()
    writer.write(
        get(f"/play/s/media.m3u8?_HLS_msn={msn}&_HLS_part={part}")
        + get("/play/s/init-1.mp4")
        + get("/play/s/nonsense.txt")
        + get("/v1/thing")
    )
    first = await read_response(reader)
    second = await read_response(reader)
    third = await read_response(reader)
    fourth = await read_response(reader)
    assert first[0] == 200 and f"{msn}.{part}.m4s".encode() in first[2]
    assert second[0] == 200 and second[2][4:8] == b"ftyp"
    assert third[0] == 404
    assert fourth[0] == 200 and b"aiohttp" in fourth[2]
    writer.close()


async def test_unknown_ids_garbage_and_other_methods_go_to_aiohttp(edge: Edge) -> None:
    live = edge.start("s", 5.0)
    assert await live.wait_media(timeout_s=5)
    for raw, want in [
        (get("/play/nope/media.m3u8"), 404),
        (get("/play/s%20x/media.m3u8"), 404),
        (b"POST /v1/thing HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 200),
        (b"HEAD /play/s/media.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"\x16\x03\x01 garbage that is not http\r\n\r\n", 400),
    ]:
        reader, writer = await edge.connect()
        writer.write(raw)
        status, headers, _ = await read_response(reader, head_only=raw.startswith(b"HEAD"))
        assert status == want, raw
        assert headers["server"].startswith("Python"), raw  # aiohttp answered
        writer.close()
    # and the edge still serves a healthy viewer
    reader, writer = await edge.connect()
    writer.write(get("/play/s/media.m3u8"))
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_an_awaitable_resolution_is_waited_for(edge: Edge) -> None:
    live = edge.start("s", 5.0)
    assert await live.wait_media(timeout_s=5)
    reader, writer = await edge.connect()
    writer.write(get("/play/slow-s/media.m3u8") + get("/play/slow-nope/media.m3u8"))
    status, headers, body = await read_response(reader)
    assert status == 200 and b"#EXT-X-PART" in body and "server" not in headers
    status, headers, _ = await read_response(reader)
    assert status == 404 and headers["server"].startswith("Python")
    writer.close()


async def test_connection_close_and_http_1_0_close_after_the_answer(edge: Edge) -> None:
    live = edge.start("s", 5.0)
    assert await live.wait_media(timeout_s=5)
    for raw in (
        get("/play/s/media.m3u8", "Connection: close"),
        b"GET /play/s/media.m3u8 HTTP/1.0\r\n\r\n",
    ):
        reader, writer = await edge.connect()
        writer.write(raw)
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_a_viewer_leaving_while_held_costs_nothing(edge: Edge) -> None:
    live = edge.start("s", 5.0)
    assert await live.wait_media(timeout_s=5)
    msn, part = live.next_part()
    for _ in range(20):
        _, writer = await edge.connect()
        writer.write(get(f"/play/s/media.m3u8?_HLS_msn={msn}&_HLS_part={part + 1}"))
        await writer.drain()
        writer.close()
    await asyncio.sleep(0.6)  # parts arrive; the waiters' connections are gone
    assert not edge.site.edge.connections
    reader, writer = await edge.connect()
    writer.write(get("/play/s/media.m3u8"))
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_a_held_request_times_out_with_503(edge: Edge) -> None:
    live = edge.start("s", 1.5)  # the feed stops: the next-but-one segment never comes
    assert await live.wait_media(timeout_s=5)
    await asyncio.sleep(1.8)
    msn = live.last_complete_msn + 2
    reader, writer = await edge.connect()
    t0 = time.monotonic()
    writer.write(get(f"/play/s/media.m3u8?_HLS_msn={msn}"))
    status, headers, _ = await read_response(reader)
    waited = time.monotonic() - t0
    assert status == 503 and headers["retry-after"] == "1"
    assert live.blocking_timeout() - 0.2 <= waited <= live.blocking_timeout() + 0.5
    writer.close()


async def test_stopping_the_site_closes_what_the_edge_serves(edge: Edge) -> None:
    live = edge.start("s", 5.0)
    assert await live.wait_media(timeout_s=5)
    reader, writer = await edge.connect()
    writer.write(get("/play/s/media.m3u8"))
    assert (await read_response(reader))[0] == 200
    msn, part = live.next_part()
    writer.write(get(f"/play/s/media.m3u8?_HLS_msn={msn + 1}&_HLS_part={part}"))
    await asyncio.sleep(0.05)
    await edge.site.stop()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert not edge.site.edge.connections
