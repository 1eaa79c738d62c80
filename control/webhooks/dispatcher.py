"""The webhook dispatcher: event log → delivery records + queued tasks.

It reads the event log from a durable cursor (record ``webhook_state/dispatcher``)
and, for every event and every endpoint that wants it, creates a delivery
record (deterministic id, so replays never duplicate) and enqueues its task.
Order of writes makes a crash at any point safe:

1. delivery records are committed (``expect_version=0``: a replay conflicts
   and falls back to one-by-one, skipping those that already exist);
2. tasks are enqueued (idempotent by id; a delivery already finished is not
   re-enqueued because the worker ignores non-pending deliveries);
3. the cursor advances (compare-and-set).

A crash between 1 and 3 replays the batch; nothing is lost or sent twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from control.store.base import Conflict, Event, Put, Record, Store, list_all
from control.webhooks.model import (
    CURSOR_ID,
    DELIVERIES,
    DELIVERY_RECORDS,
    ENDPOINTS,
    PENDING,
    STATE,
    delivery_id,
    endpoint_wants,
    new_delivery,
    queue_for,
)

log = logging.getLogger(__name__)


async def all_endpoints(store: Store) -> list[Record]:
    return await list_all(store, ENDPOINTS)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        batch: int = 500,
        on_enqueued: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.batch = batch
        self.on_enqueued = on_enqueued
        self.endpoints: list[Record] = []
        """The endpoint list read on the last non-empty batch (the worker reuses it)."""

    async def cursor(self) -> tuple[int, int]:
        """(cursor, record version)."""
        rec = await self.store.get(STATE, CURSOR_ID)
        return (int(rec.data.get("cursor", 0)), rec.version) if rec else (0, 0)

    async def dispatch_once(self) -> int:
        """Process one batch of events; returns how many events it consumed."""
        cursor, version = await self.cursor()
        events = await self.store.events_after(cursor, limit=self.batch)
        if not events:
            return 0
        endpoints = await all_endpoints(self.store)
        self.endpoints = endpoints
        now = self.clock()
        planned: list[tuple[Event, Record, str]] = [
            (ev, ep, delivery_id(ev.id, ep.id))
            for ev in events
            for ep in endpoints
            if endpoint_wants(ep, ev)
        ]
        to_enqueue = await self._create_deliveries(planned, now)
        touched = {endpoint_id for endpoint_id, _ in to_enqueue}
        for i in range(0, len(to_enqueue), 200):  # concurrent: group-committed / pipelined
            await asyncio.gather(
                *(
                    self.store.enqueue(queue_for(ep), did, {"delivery_id": did}, run_at=now)
                    for ep, did in to_enqueue[i : i + 200]
                )
            )
        try:
            await self.store.commit(
                [Put(STATE, CURSOR_ID, {"cursor": events[-1].cursor}, expect_version=version)]
            )
        except Conflict:
            log.info("webhook dispatcher cursor moved concurrently; re-reading")
        if touched and self.on_enqueued is not None:
            self.on_enqueued(touched)
        return len(events)

    async def _create_deliveries(
        self, planned: list[tuple[Event, Record, str]], now: float
    ) -> list[tuple[str, str]]:
        if not planned:
            return []
        puts = [DELIVERY_RECORDS.put(did, new_delivery(ev, ep, now)) for ev, ep, did in planned]
        try:
            await self.store.commit(puts)
            return [(ep.id, did) for _ev, ep, did in planned]
        except Conflict:
            pass
        # replay after a crash: some deliveries exist already
        out: list[tuple[str, str]] = []
        for put, (_ev, ep, did) in zip(puts, planned, strict=True):
            try:
                await self.store.commit([put])
            except Conflict:
                existing = await self.store.get(DELIVERIES, did)
                if existing is None or existing.data.get("status") != PENDING:
                    continue
            out.append((ep.id, did))
        return out
