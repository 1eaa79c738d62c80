"""The composition root: subsystems plug in as cleanup contexts between the
services and readiness, background tasks are owned and cancelled, and the job
runner starts only after every subsystem registered its handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control import appkeys
from control.app import create_app
from control.settings import load_settings


async def test_subsystem_lifecycle_and_owned_tasks(tmp_path: Path) -> None:
    seen: list[str] = []
    forever_cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            forever_cancelled.set()

    async def rtmp_like(app: web.Application) -> AsyncIterator[None]:
        assert await app[appkeys.STORE].ping()
        assert app[appkeys.STATE].ready is False  # not ready until every subsystem is up
        app[appkeys.JOBS].handlers["test.noop"] = lambda job: asyncio.sleep(0)
        app[appkeys.TASKS].spawn(forever(), name="forever")
        seen.append("up")
        yield
        assert await app[appkeys.STORE].ping()  # the store outlives subsystems
        seen.append("down")

    settings = load_settings({}, data_dir=str(tmp_path / "d"), access_log=False)
    app = create_app(settings, subsystems=[rtmp_like])
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        async with client.get("/v1/health") as r:
            assert r.status == 200 and (await r.json())["queues"] == {"webhooks": 0, "jobs": 0}
        assert len(app[appkeys.TASKS]) == 1
    finally:
        await client.close()
    assert seen == ["up", "down"]
    assert forever_cancelled.is_set()
    assert app[appkeys.STATE].shutting_down


async def test_graceful_shutdown_finishes_in_flight_requests(tmp_path: Path) -> None:
    import types

    import aiohttp

    from control.api import default_modules
    from control.auth import create_api_key
    from control.middleware import requires
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
    app = create_app(settings, api_modules=[*default_modules(), mod])
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    _, key = await create_api_key(app[appkeys.STORE], "read")
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
