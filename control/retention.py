"""Retention and upgrade scrubs: what keeps the store from growing without end
and removes what it must no longer hold.

* **Sweeps** (`Retention.sweep_once`), run every ``retention_sweep_s`` by the one
  node holding the ``retention`` lease: events older than
  ``event_retention_s`` (the log remembers how far it was trimmed, so an older
  cursor answers 410), webhook deliveries with their attempts and failed jobs
  older than that, expired kv entries and leases, and idle token buckets (one
  per client address on the public routes); views and ingest bitrate
  minutes and live streams' timeline entries older than ``view_retention_s``.
* **Scrubs** (`Retention.scrub`), once per store on upgrade: stream keys out of
  every stored event and webhook delivery payload (they used to carry the
  whole live stream view, secret included).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from control.analytics.view import COLLECTION as VIEWS
from control.ingest_health import INGEST_MINUTES
from control.jobs import FAILED_JOBS
from control.leased_loop import LeasedLoop
from control.outbox import Change, Outbox
from control.settings import Settings
from control.store.base import Event, Store
from control.timeline import TIMELINE
from control.webhooks.model import DELIVERIES, DELIVERY_RECORDS

log = logging.getLogger(__name__)

LEASE = "retention"
SCRUB_LEASE = "retention:scrub"
SCRUBBED_KEY = "migration:stream_keys_scrubbed"
IDLE_BUCKET_S = 3600.0
"""A token bucket untouched this long is full again (any sane rate refills
within minutes), so deleting it changes no answer."""
_SECRET_FIELDS = ("stream_key",)


def scrub_event(event: Event) -> dict[str, Any] | None:
    """The event's data without the secrets events must not carry (None: clean)."""
    if not any(k in event.data for k in _SECRET_FIELDS):
        return None
    return {k: v for k, v in event.data.items() if k not in _SECRET_FIELDS}


class Retention:
    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        settings: Settings,
        *,
        owner: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.settings = settings
        self.owner = owner
        self.clock = clock
        self._loop: LeasedLoop | None = None

    def delivery_cutoff(self, now: float) -> float:
        # a delivery still being retried is never swept, whatever the retention
        keep = max(self.settings.event_retention_s, self.settings.webhook_retry_for_s + 3600.0)
        return now - keep

    async def sweep_once(self) -> dict[str, int]:
        now = self.clock()
        before = now - self.settings.event_retention_s
        views_before = now - self.settings.view_retention_s
        removed = {
            "events": await self._drain(lambda: self.store.trim_events(before, 1000)),
            "webhook_deliveries": await self._drain(
                lambda: self.store.delete_created_before(DELIVERIES, self.delivery_cutoff(now), 500)
            ),
            "failed_jobs": await self._drain(
                lambda: self.store.delete_created_before(FAILED_JOBS, before, 500)
            ),
            "views": await self._drain(
                lambda: self.store.delete_created_before(VIEWS, views_before, 500)
            ),
            "timeline": await self._drain(
                lambda: self.store.delete_created_before(TIMELINE, views_before, 500)
            ),
            "ingest_minutes": await self._drain(
                lambda: self.store.delete_created_before(INGEST_MINUTES, views_before, 500)
            ),
            "expired": await self.store.sweep_expired(IDLE_BUCKET_S),
        }
        if any(removed.values()):
            log.info("retention sweep", extra={"removed": removed})
        return removed

    @staticmethod
    async def _drain(step: Callable[[], Any]) -> int:
        total = 0
        while n := await step():
            total += n
            await asyncio.sleep(0)  # let requests in between batches
        return total

    async def scrub(self) -> bool:
        """Run the upgrade scrub once per store; False if another node holds it."""
        if await self.store.kv_get(SCRUBBED_KEY):
            return True
        if not await self.store.acquire_lease(SCRUB_LEASE, self.owner, 600):
            return False
        try:
            events = await self.store.rewrite_events(scrub_event)
            deliveries = await self._scrub_deliveries()
            await self.store.kv_set(SCRUBBED_KEY, str(self.clock()))
            if events or deliveries:
                log.warning(
                    "removed stream keys from stored events and webhook deliveries",
                    extra={"events": events, "deliveries": deliveries},
                )
            return True
        finally:
            await self.store.release_lease(SCRUB_LEASE, self.owner)

    async def _scrub_deliveries(self) -> int:
        changed = 0
        after: str | None = None
        while True:
            page = await self.store.list(DELIVERIES, limit=100, starting_after=after)
            for rec in page.data:
                changed += await self._scrub_delivery(rec.id)
            if not page.has_more or not page.data:
                return changed
            after = page.data[-1].id

    async def _scrub_delivery(self, delivery_id: str) -> int:
        """1 when the delivery's payload held a secret and was cleaned (the worker
        may be writing its attempts meanwhile: compare-and-set)."""

        async def attempt() -> Change[int]:
            rec = await self.store.get(DELIVERIES, delivery_id)
            payload = rec.data.get("payload") if rec is not None else None
            data = payload.get("data") if isinstance(payload, dict) else None
            if rec is None or not isinstance(data, dict):
                return Change(0)
            if not any(k in data for k in _SECRET_FIELDS):
                return Change(0)
            clean = {k: v for k, v in data.items() if k not in _SECRET_FIELDS}
            new = {**rec.data, "payload": {**payload, "data": clean}}  # type: ignore[dict-item]
            return Change(1, [DELIVERY_RECORDS.put(rec.id, new, expect_version=rec.version)])

        return await self.outbox.compare_and_set(attempt, what=f"webhook delivery {delivery_id}")

    # -- the loop ----------------------------------------------------------------------
    def start(self) -> None:
        self._loop = LeasedLoop(
            self.store,
            LEASE,
            self.owner,
            self.settings.retention_sweep_s,
            self.sweep_once,
            first=self.scrub,
        )
        self._loop.start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
