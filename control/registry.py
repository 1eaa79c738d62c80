"""The node registry: which nodes share this store, where to reach them, how
loaded they are, and draining.

Every node keeps a record in collection ``nodes`` (``{url, started_at,
last_seen, draining, load: {cpu, streams, viewers, rooms}}``) and an alive key
with a TTL (``node_alive:<id>``, `ALIVE_TTL_S`), both refreshed every
`HEARTBEAT_S`. A node is alive while its key is: the key expires on the
store's clock (Redis's TTL, SQLite's one machine), so nodes whose clocks
disagree still agree on who is alive. `alive()` lists the living; records of
nodes gone for `FORGET_AFTER_S` are deleted by whichever node notices.

Draining: ``onair drain`` (or anyone) sets ``node_drain:<id>`` to the number of
seconds the node has; the node sees it at its next heartbeat (`drain_asked`):
it takes no new publishers or rooms (readiness fails, so load balancers move
on) and exits when nothing is left on it or the deadline passes — exiting is
the graceful stop that hands live broadcasts to the nodes their encoders
reconnect to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control.domain.api_keys import rfc3339
from control.domain.records import Collection
from control.store.base import Record, Store

log = logging.getLogger(__name__)

NODE_RECORDS = Collection("nodes")
NODES = NODE_RECORDS.name
HEARTBEAT_S = 2.0
ALIVE_TTL_S = 6.0
FORGET_AFTER_S = 3600.0
"""A node not seen for this long loses its record (it is long gone)."""


def alive_key(node_id: str) -> str:
    return f"node_alive:{node_id}"


def drain_key(node_id: str) -> str:
    return f"node_drain:{node_id}"


@dataclass(frozen=True, slots=True)
class Load:
    cpu: float
    """This node's process CPU over the last heartbeat, in cores (1.0 = one core)."""
    streams: int
    """Live publications it ingests."""
    viewers: int
    """WebRTC viewers plus open HTTP connections (each player holds one)."""
    rooms: int
    """Rooms it hosts."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu": round(self.cpu, 3),
            "streams": self.streams,
            "viewers": self.viewers,
            "rooms": self.rooms,
        }


def node_view(rec: Record) -> dict[str, Any]:
    d = rec.data
    return {
        "id": rec.id,
        "object": "node",
        "url": d.get("url"),
        "started_at": rfc3339(d.get("started_at")),
        "last_seen": rfc3339(d.get("last_seen")),
        "draining": bool(d.get("draining", False)),
        "load": d.get("load") or {"cpu": 0.0, "streams": 0, "viewers": 0, "rooms": 0},
    }


async def alive(store: Store) -> list[Record]:
    """The records of the nodes alive now, by id."""
    records: list[Record] = []
    after: str | None = None
    while True:
        page = await store.list(NODES, limit=100, starting_after=after)
        records += page.data
        if not page.has_more or not page.data:
            break
        after = page.data[-1].id
    flags = await asyncio.gather(*(store.kv_get(alive_key(r.id)) for r in records))
    return [r for r, flag in zip(records, flags, strict=True) if flag]


async def node_url(store: Store, node_id: str) -> str | None:
    """Where `node_id` said other nodes reach it."""
    rec = await store.get(NODES, node_id)
    url = rec.data.get("url") if rec is not None else None
    return str(url).rstrip("/") if url else None


async def request_drain(store: Store, node_id: str, timeout_s: float) -> None:
    """Ask `node_id` to drain within `timeout_s` (it sees it within a heartbeat)."""
    await store.kv_set(drain_key(node_id), repr(float(timeout_s)), ttl_s=timeout_s + 60)


class NodeRegistry:
    def __init__(
        self,
        store: Store,
        *,
        node_id: str,
        url: str,
        load: Callable[[float], Load],
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`url`: where other nodes reach this one; `public_url`: where clients
        do (None: the same). `load(cpu)` says how loaded the node is (given its
        measured CPU)."""
        self.store = store
        self.node_id = node_id
        self.url = url
        self.public_url = public_url
        self._load = load
        self._clock = clock
        self.started_at = clock()
        self.draining = False
        self.drain_asked = asyncio.Event()
        """Set when a drain was asked for; `drain_deadline` then says until when."""
        self.drain_deadline = 0.0
        """Monotonic time by which the node exits, drained or not."""
        self._task: asyncio.Task[None] | None = None
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._last_forget = 0.0

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="node-registry")

    async def stop(self) -> None:
        """Leave the registry (a clean exit is not a lost node)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.store.kv_delete(alive_key(self.node_id))
            await self.store.kv_delete(drain_key(self.node_id))
            await self.store.commit([NODE_RECORDS.delete(self.node_id)])

    def _cpu(self) -> float:
        wall, cpu = time.monotonic(), time.process_time()
        last_wall, last_cpu = self._cpu_mark
        self._cpu_mark = (wall, cpu)
        return (cpu - last_cpu) / (wall - last_wall) if wall > last_wall else 0.0

    async def beat(self) -> None:
        """Say this node is alive, with its load; notice a drain request."""
        if not self.draining:
            asked = await self.store.kv_get(drain_key(self.node_id))
            if asked is not None:
                self.draining = True
                self.drain_deadline = time.monotonic() + float(asked)
                self.drain_asked.set()
                log.info("node %s: draining (%s s at most)", self.node_id, asked)
        now = self._clock()
        data = {
            "url": self.url,
            "public_url": self.public_url or self.url,
            "started_at": self.started_at,
            "last_seen": now,
            "draining": self.draining,
            "load": self._load(self._cpu()).to_dict(),
        }
        await self.store.commit([NODE_RECORDS.put(self.node_id, data, expect_version=None)])
        await self.store.kv_set(alive_key(self.node_id), "1", ttl_s=ALIVE_TTL_S)
        if now - self._last_forget >= 60:
            self._last_forget = now
            await self._forget_the_long_gone(now)

    async def _forget_the_long_gone(self, now: float) -> None:
        living = {r.id for r in await alive(self.store)}
        page = await self.store.list(NODES, limit=100)
        for rec in page.data:
            last_seen = float(rec.data.get("last_seen") or 0)
            if rec.id not in living and now - last_seen > FORGET_AFTER_S:
                await self.store.commit([NODE_RECORDS.delete(rec.id)])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node %s: heartbeat failed", self.node_id)
