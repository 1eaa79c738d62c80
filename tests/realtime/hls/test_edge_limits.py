"""The playback edge under connection floods: a request head has an absolute
deadline (dripping a byte now and then holds nothing), one address holds only
its share of connections (429), and a node near its descriptor limit sheds new
connections with 503 — while everyone else is still answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from ingest.conn_limits import ConnectionLimits
from realtime.hls.edge import EdgeSite


@pytest.fixture
async def make_site() -> AsyncIterator[object]:
    runners: list[web.AppRunner] = []

    async def make(limits: ConnectionLimits, **kw: object) -> int:
        app = web.Application()

        async def api(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        app.router.add_get("/v1/thing", api)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = EdgeSite(runner, "127.0.0.1", 0, resolve=lambda pid, tok: None, limits=limits, **kw)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    yield make
    for r in runners:
        await r.cleanup()


async def ask(port: int, source: str = "127.0.0.1") -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(b"GET /v1/thing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status = int((await asyncio.wait_for(reader.readline(), 5)).split()[1])
    writer.close()
    return status


async def test_a_dripping_head_is_cut_off_at_its_deadline(make_site) -> None:  # type: ignore[no-untyped-def]
    port = await make_site(ConnectionLimits(total=100), head_timeout_s=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    closed_after = None
    for byte in b"GET /v1/thing HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            closed_after = time.monotonic() - t0
            break
        if reader.at_eof():
            closed_after = time.monotonic() - t0
            break
        await asyncio.sleep(0.05)  # each byte resets no timer
        if time.monotonic() - t0 > 5:
            break
    assert closed_after is not None, "the slow head was never cut off"
    assert closed_after < 2.5
    assert await ask(port) == 200


async def test_one_address_holds_only_its_share(make_site) -> None:  # type: ignore[no-untyped-def]
    limits = ConnectionLimits(total=100)
    port = await make_site(limits, max_per_client=5)
    idle = [
        await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        for _ in range(5)
    ]
    assert await ask(port, "127.0.0.2") == 429
    assert await ask(port, "127.0.0.1") == 200, "other addresses are still served"
    for _, w in idle:
        w.close()
    await asyncio.sleep(0.1)
    assert await ask(port, "127.0.0.2") == 200, "closed connections free the share"
    assert limits.refused["client"] == 1


async def test_near_the_limit_new_connections_are_shed_with_503(make_site) -> None:  # type: ignore[no-untyped-def]
    limits = ConnectionLimits(total=4)
    port = await make_site(limits, max_per_client=100)
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    await asyncio.sleep(0.05)
    assert await ask(port, "127.0.0.3") == 503
    for _, w in held:
        w.close()
    await asyncio.sleep(0.1)
    assert await ask(port, "127.0.0.3") == 200


async def test_connections_handed_to_aiohttp_are_still_counted(make_site) -> None:  # type: ignore[no-untyped-def]
    limits = ConnectionLimits(total=100)
    port = await make_site(limits, max_per_client=2)
    kept = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.4", 0)
        )
        writer.write(b"GET /v1/thing HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive, aiohttp's
        assert (await asyncio.wait_for(reader.readline(), 5)).split()[1] == b"200"
        kept.append(writer)
    assert await ask(port, "127.0.0.4") == 429
    for w in kept:
        w.close()
