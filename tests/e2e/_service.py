"""Shared e2e helpers around the real `onair serve` process (ServiceProcess).

svc = await start_service(tmp_path, {"ONAIR_UPLOAD_MAX_BYTES": "1000"})
api = Api(svc)
stream = await api.ok("POST", "/v1/live-streams", {"reconnect_window_s": 2})
...
await stop_service(svc)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import aiohttp

from tests.control.api.service_process import ServiceProcess, free_port

__all__ = [
    "Api",
    "ServiceProcess",
    "free_port",
    "sse_hears",
    "start_service",
    "stop_service",
]


async def start_service(base: Path, env: dict[str, str] | None = None) -> ServiceProcess:
    svc = ServiceProcess(base / "data", env)
    await asyncio.to_thread(svc.start, 60.0)
    assert svc.admin_key, "no admin key in the banner"
    return svc


async def stop_service(svc: ServiceProcess) -> None:
    if svc.proc is not None:
        await asyncio.to_thread(svc.stop, 15.0)


def rtmp_url(svc: ServiceProcess, stream_key: str) -> str:
    return f"rtmp://127.0.0.1:{svc.rtmp_port}/live/{stream_key}"


class Api:
    """A tiny JSON client for the service's API with its admin key."""

    def __init__(self, svc: ServiceProcess) -> None:
        self.svc = svc

    async def call(
        self, method: str, path: str, body: Any = None, *, key: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key or self.svc.admin_key}"}
        async with aiohttp.ClientSession() as s:
            async with s.request(method, self.svc.url + path, json=body, headers=headers) as r:
                data = await r.json() if r.content_type == "application/json" else await r.read()
                return r.status, data

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, data = await self.call(method, path, body)
        assert status < 300, (method, path, status, data)
        return data

    async def live_stream(self, **fields: Any) -> dict[str, Any]:
        body = {"reconnect_window_s": 2, **fields}
        return dict(await self.ok("POST", "/v1/live-streams", body))

    async def events(self, resource_ids: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Every event of the durable log in cursor order (only those about one of
        `resource_ids` when given)."""
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            page = await self.ok("GET", f"/v1/events?after={after}&limit=100")
            data = page["data"]
            out += [e for e in data if resource_ids is None or e["resource_id"] in resource_ids]
            if not page["has_more"]:
                return out
            after = page["next_cursor"]

    async def wait_stream_status(
        self, stream_id: str, status: str, within: float = 30.0
    ) -> dict[str, Any]:
        return await self._wait(f"/v1/live-streams/{stream_id}", "status", status, within)

    async def wait_asset(
        self, asset_id: str, status: str = "ready", within: float = 60.0, field: str = "status"
    ) -> dict[str, Any]:
        return await self._wait(f"/v1/assets/{asset_id}", field, status, within)

    async def _wait(self, path: str, field: str, value: str, within: float) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            data = await self.ok("GET", path)
            if data.get(field) == value:
                return dict(data)
            if field == "status" and data.get("status") == "errored" and value != "errored":
                raise AssertionError(f"{path} errored: {data}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} {field} != {value} after {within}s: {data}")
            await asyncio.sleep(0.1)


async def http_get(
    url: str, *, within: float = 15.0, session: aiohttp.ClientSession | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """GET without following redirects' surprises: (status, body, headers)."""
    own = session is None
    s = session or aiohttp.ClientSession()
    try:
        async with s.get(url, timeout=aiohttp.ClientTimeout(total=within)) as r:
            return r.status, await r.read(), dict(r.headers)
    finally:
        if own:
            await s.close()


async def sse_hears(listener: ServiceProcess, api: Api) -> float:
    """Seconds from a live stream created through `api` to its event arriving on
    `listener`'s event stream (`/v1/events/stream`)."""
    headers = {"Authorization": f"Bearer {listener.admin_key}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(listener.url + "/v1/events/stream", headers=headers) as r,
    ):
        await r.content.readline()  # the stream is open
        created = await api.ok("POST", "/v1/live-streams", {"record": False})
        sent = time.monotonic()
        async with asyncio.timeout(10):
            async for line in r.content:
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if event["data"].get("id") == created["id"]:
                        return time.monotonic() - sent
    raise AssertionError("the event never came")
