"""Headless Chromium driven over the DevTools protocol (aiohttp websocket), for e2e tests.

    async with chromium_page("http://127.0.0.1:PORT/watch/x") as page:
        await page.wait_for("window.onairStats && window.onairStats.playing", timeout_s=20)
        latency = await page.evaluate("window.onairStats.latency")

Each page runs in its own Chromium process with a fresh user-data-dir,
`--remote-debugging-port=0` (the port is read from the DevToolsActivePort file
Chromium writes), the flags of docs/TEAM.md, and autoplay allowed. The process
group is terminated (then killed) on exit and the profile removed. Console
messages and uncaught exceptions are collected in `page.console` for
assertions and failure messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = os.environ.get("ONAIR_CHROMIUM", "/usr/bin/chromium")

BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
)


class ChromiumError(RuntimeError):
    pass


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None


class ChromiumPage:
    """One page target of a running Chromium, over its DevTools websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if "id" in data:
                    fut = self._pending.pop(data["id"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(data)
                    continue
                self._on_event(data)
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ChromiumError("DevTools connection closed"))
            self._pending.clear()

    def _on_event(self, data: dict[str, Any]) -> None:
        method = data.get("method", "")
        params = data.get("params", {})
        if method == "Runtime.consoleAPICalled":
            args = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            self.console.append(f"console.{params.get('type')}: {args}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception", {}).get("description") or details.get("text")
            self.console.append(f"exception: {exc}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(
                f"log.{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}"
            )
        if len(self.events) < 10_000:
            self.events.append(data)
        if len(self.console) > 2_000:
            del self.console[:1_000]

    async def send(
        self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Send a DevTools command; returns its `result` or raises ChromiumError."""
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_str(
            json.dumps({"id": msg_id, "method": method, "params": params or {}})
        )
        reply = await asyncio.wait_for(fut, timeout_s)
        if "error" in reply:
            raise ChromiumError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(
        self, expression: str, *, await_promise: bool = True, timeout_s: float = 30.0
    ) -> Any:
        """Evaluate JS in the page and return its value (JSON-serialisable values only)."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
            timeout_s=timeout_s,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise ChromiumError(f"JS exception: {text}")
        return result.get("result", {}).get("value")

    async def wait_for(
        self, expression: str, *, timeout_s: float = 20.0, interval: float = 0.2
    ) -> Any:
        """Poll `expression` until it is truthy; returns its value or raises TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            with contextlib.suppress(ChromiumError):
                value = await self.evaluate(expression)
                if value:
                    return value
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"{expression!r} not true after {timeout_s}s; console: {self.console[-20:]}"
                )
            await asyncio.sleep(interval)

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})

    async def screenshot(self, path: str | Path) -> Path:
        import base64

        result = await self.send("Page.captureScreenshot", {"format": "png"})
        p = Path(path)
        await asyncio.to_thread(p.write_bytes, base64.b64decode(result["data"]))
        return p

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._ws.close()


async def _read_devtools_port(
    profile: Path, proc: asyncio.subprocess.Process, timeout_s: float
) -> int:
    marker = profile / "DevToolsActivePort"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if proc.returncode is not None:
            raise ChromiumError(f"chromium exited with {proc.returncode} before DevTools was up")
        try:
            first = marker.read_text().splitlines()[0].strip()
            if first:
                return int(first)
        except (FileNotFoundError, IndexError, ValueError):
            pass
        await asyncio.sleep(0.05)
    raise ChromiumError("chromium did not write DevToolsActivePort in time")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


@contextlib.asynccontextmanager
async def chromium_page(
    url: str | None = None,
    *,
    extra_args: Sequence[str] = (),
    startup_timeout: float = 30.0,
    window_size: str = "1280,720",
) -> AsyncIterator[ChromiumPage]:
    """A fresh headless Chromium with one page, navigated to `url` if given."""
    profile = Path(tempfile.mkdtemp(prefix="onair-chromium-"))
    args = [
        CHROMIUM,
        *BASE_FLAGS,
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        f"--window-size={window_size}",
        *extra_args,
        "about:blank",
    ]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    session: aiohttp.ClientSession | None = None
    page: ChromiumPage | None = None
    try:
        port = await _read_devtools_port(profile, proc, startup_timeout)
        session = aiohttp.ClientSession()
        ws_url = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + startup_timeout
        while ws_url is None:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
                    targets = await r.json()
                ws_url = next(
                    (t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"), None
                )
            if ws_url is None:
                if loop.time() > deadline:
                    raise ChromiumError("no page target")
                await asyncio.sleep(0.1)
        ws = await session.ws_connect(ws_url, max_msg_size=64 * 1024 * 1024)
        page = ChromiumPage(ws)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Log.enable")
        if url is not None:
            await page.navigate(url)
        yield page
    finally:
        if page is not None:
            await page.close()
        if session is not None:
            await session.close()
        await _stop(proc)
        shutil.rmtree(profile, ignore_errors=True)
