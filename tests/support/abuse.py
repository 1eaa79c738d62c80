"""Attackers for the abuse tests and `bench/abuse.py`, all on loopback and bounded
in count and time: they stop when their task is cancelled.

* `ConnectionFlood`: N connections from one source address (127.0.0.x), half
  of them idle, half dripping a request head one byte a second (slowloris). A
  connection that is closed is opened again, so the pressure stays; it counts
  what the server did to them.
* `ThumbnailFlood`: K workers asking for thumbnails at random times, from one
  source address, counting answers by status.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field

import aiohttp


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel `tasks` until they are all done. Python 3.11's wait_for can swallow a
    cancellation that races a result, so stragglers are cancelled again (the
    floods' `_stopping` flag ends their loops in any case)."""
    pending = set(tasks)
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=2)


@dataclass
class ConnectionFlood:
    host: str
    port: int
    source: str = "127.0.0.2"
    connections: int = 2000
    drip_every_s: float = 1.0
    opened: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """How refused connections were answered: "429", "503", "closed", "error"."""
    cut: int = 0
    """Dripping connections the server closed while their head was incomplete."""
    open_now: int = 0
    held_now: int = 0
    """Connections open now that the server accepted (no answer within a drip
    interval), i.e. what this address holds on the server."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: bool = False

    async def start(self, ramp_s: float = 2.0) -> None:
        for i in range(self.connections):
            drip = i % 2 == 1
            self._tasks.append(asyncio.ensure_future(self._hold(drip)))
            if i % 50 == 49:
                await asyncio.sleep(ramp_s * 50 / self.connections)

    async def stop(self) -> None:
        self._stopping = True
        await cancel_all(self._tasks)
        self._tasks.clear()

    async def _hold(self, drip: bool) -> None:
        head = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096
        while not self._stopping:
            try:
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, local_addr=(self.source, 0)
                )
            except OSError:
                self.refused["error"] += 1
                await asyncio.sleep(1.0)
                continue
            self.opened += 1
            self.open_now += 1
            held = False
            try:
                sent = 0
                while not self._stopping:
                    try:
                        line = await asyncio.wait_for(reader.readline(), self.drip_every_s)
                    except TimeoutError:
                        line = None
                        if not held:
                            held = True
                            self.held_now += 1
                    if line is not None:
                        # answered or closed by the server
                        status = line.split()[1].decode() if line.startswith(b"HTTP/") else ""
                        if status in ("429", "503"):
                            self.refused[status] += 1
                        elif drip and sent:
                            self.cut += 1
                        else:
                            self.refused["closed"] += 1
                        break
                    if drip:
                        writer.write(head[sent : sent + 1])
                        sent += 1
                        with contextlib.suppress(ConnectionError):
                            await writer.drain()
            except (ConnectionError, OSError):
                if drip:
                    self.cut += 1
            finally:
                self.open_now -= 1
                self.held_now -= held
                writer.close()
            await asyncio.sleep(0.5)


@dataclass
class ThumbnailFlood:
    base_url: str
    playback_id: str
    duration_s: float
    source: str = "127.0.0.3"
    workers: int = 16
    statuses: Counter[int] = field(default_factory=Counter)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None
    _stopping: bool = False

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(local_addr=(self.source, 0), limit=self.workers)
        self._session = aiohttp.ClientSession(connector=connector)
        self._tasks = [asyncio.ensure_future(self._ask()) for _ in range(self.workers)]

    async def stop(self) -> None:
        self._stopping = True
        await cancel_all(self._tasks)
        if self._session is not None:
            await self._session.close()

    async def _ask(self) -> None:
        assert self._session is not None
        rng = random.Random()
        while not self._stopping:
            t = rng.uniform(0, self.duration_s)
            url = f"{self.base_url}/thumb/{self.playback_id}.jpg?time={t:.3f}"
            try:
                async with self._session.get(url) as r:
                    await r.read()
                    self.statuses[r.status] += 1
            except (aiohttp.ClientError, OSError):
                self.statuses[0] += 1
                await asyncio.sleep(0.1)
