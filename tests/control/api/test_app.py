"""The node graph: parts given from outside start between the services and
readiness, background tasks are owned and cancelled, and the job runner starts
only after every part registered its handlers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control.http.app import make_http_app
from control.http.routes import control_modules
from control.node import Node, build_node
from control.settings import load_settings


async def test_subsystem_lifecycle_and_owned_tasks(tmp_path: Path) -> None:
    seen: list[str] = []
    forever_cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            forever_cancelled.set()

    @contextlib.asynccontextmanager
    async def rtmp_like(node: Node) -> AsyncIterator[None]:
        assert await node.store.ping()
        assert node.state.ready is False  # not ready until every part is up
        node.jobs.handlers["test.noop"] = lambda job: asyncio.sleep(0)
        node.tasks.spawn(forever(), name="forever")
        seen.append("up")
        yield
        assert await node.store.ping()  # the store outlives the parts
        seen.append("down")

    settings = load_settings({}, data_dir=str(tmp_path / "d"), access_log=False)
    node = build_node(settings, media=False, extras=[rtmp_like])
    app = make_http_app(node)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        async with client.get("/v1/health") as r:
            assert r.status == 200 and (await r.json())["queues"] == {"webhooks": 0, "jobs": 0}
        assert len(node.tasks) == 1
    finally:
        await client.close()
    assert seen == ["up", "down"]
    assert forever_cancelled.is_set()
    assert node.state.shutting_down


async def test_graceful_shutdown_finishes_in_flight_requests(tmp_path: Path) -> None:
    import types

    import aiohttp

    from control.domain.api_keys import create_api_key
    from control.http.middleware import requires
    from tests.control.api.service_process import free_port

    entered = asyncio.Event()

    @requires("read")
    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await asyncio.sleep(0.5)
        return web.json_response({"done": True})

    mod = types.ModuleType("slow_read")
    mod.add_routes = lambda app: app.router.add_get("/v1/test-slow", slow)  # type: ignore[attr-defined]
    mod.OPENAPI = {}  # type: ignore[attr-defined]

    port = free_port()
    settings = load_settings({}, data_dir=str(tmp_path / "d"), access_log=False)
    node = build_node(settings, media=False)
    app = make_http_app(node, modules=[*control_modules(), mod])
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    _, key = await create_api_key(node.store, "read")
    async with aiohttp.ClientSession() as s:

        async def call() -> tuple[int, object]:
            async with s.get(
                f"http://127.0.0.1:{port}/v1/test-slow", headers={"Authorization": f"Bearer {key}"}
            ) as r:
                return r.status, await r.json()

        pending = asyncio.create_task(call())
        await asyncio.wait_for(entered.wait(), 5)
        await runner.cleanup()  # what SIGTERM does in `onair serve`
        assert await pending == (200, {"done": True})
