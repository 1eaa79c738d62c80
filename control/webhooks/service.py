"""WebhookService: the dispatcher loop and the delivery loop, owned as one unit.

    svc = WebhookService(store, outbox=Outbox(store), node_id="n1")
    await svc.start()
    ... await store.commit(ops, events); svc.notify()   # wake promptly
    await svc.stop(timeout_s=10)                        # graceful

Everything durable lives in the Store (cursor, deliveries, queued tasks), so a
new service on the same store after a crash carries on where the old one
stopped. Only one node dispatches at a time (named lease); every node
delivers. Without `notify()` (e.g. a commit on another node) the loops poll
every `poll_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from control.outbox import Outbox
from control.store.base import Record, Store
from control.webhooks.destination import PublicOnlyResolver
from control.webhooks.dispatcher import Dispatcher
from control.webhooks.model import DISPATCHER_LEASE, QUEUE_PREFIX, RetryPolicy
from control.webhooks.worker import DeliveryWorker, WorkerConfig, retry_delivery

log = logging.getLogger(__name__)

SessionFactory = Callable[[], aiohttp.ClientSession]


def default_session_factory(
    max_in_flight: int = 64, *, allow_private: bool = False
) -> SessionFactory:
    def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=max_in_flight,
                limit_per_host=0,
                resolver=None if allow_private else PublicOnlyResolver(),
            ),
            headers={"user-agent": "onair-webhooks/1"},
            trust_env=False,  # no proxy from the environment: it would hide the destination
        )

    return make


class WebhookService:
    def __init__(
        self,
        store: Store,
        *,
        outbox: Outbox,
        node_id: str,
        http_session_factory: SessionFactory | None = None,
        clock: Callable[[], float] = time.time,
        policy: RetryPolicy | None = None,
        timeout_s: float = 10.0,
        max_in_flight: int = 64,
        per_endpoint_concurrency: int = 8,
        poll_interval_s: float = 0.5,
        dispatch_batch: int = 500,
        rng: random.Random | None = None,
        allow_private: bool = False,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.node_id = node_id
        self.clock = clock
        self._session_factory = http_session_factory or default_session_factory(
            max_in_flight, allow_private=allow_private
        )
        self.config = WorkerConfig(
            allow_private=allow_private,
            policy=policy or RetryPolicy(),
            timeout_s=timeout_s,
            max_in_flight=max_in_flight,
            per_endpoint_concurrency=per_endpoint_concurrency,
            poll_interval_s=poll_interval_s,
        )
        self.worker = DeliveryWorker(
            store, node_id=node_id, config=self.config, clock=clock, rng=rng
        )
        self.dispatcher = Dispatcher(
            store, clock=clock, batch=dispatch_batch, on_enqueued=self._on_enqueued
        )
        self._dispatch_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, store: Store, settings: Any, **kw: Any) -> WebhookService:
        """Build from `control.settings.Settings` (webhook_* fields, node_id)."""
        policy = RetryPolicy(
            base_s=float(getattr(settings, "webhook_backoff_base_s", 5.0)),
            max_s=float(getattr(settings, "webhook_backoff_max_s", 3600.0)),
            retry_for_s=float(getattr(settings, "webhook_retry_for_s", 25 * 3600.0)),
        )
        kw.setdefault("policy", policy)
        kw.setdefault("timeout_s", float(getattr(settings, "webhook_timeout_s", 10.0)))
        kw.setdefault("max_in_flight", int(getattr(settings, "webhook_concurrency", 64)))
        kw.setdefault("allow_private", bool(getattr(settings, "webhook_allow_private", False)))
        return cls(store, node_id=str(getattr(settings, "node_id", "node")), **kw)

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._session = self._session_factory()
        self.worker.session = self._session
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="webhooks-dispatch"),
            asyncio.create_task(self._deliver_loop(), name="webhooks-deliver"),
        ]

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking work, let in-flight attempts finish (up to timeout_s)."""
        if not self._running:
            return
        self._running = False
        self._dispatch_wake.set()
        self.worker.wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        await self.worker.drain(timeout_s)
        with contextlib.suppress(Exception):
            await self.store.release_lease(DISPATCHER_LEASE, self.node_id)
        if self._session is not None:
            await self._session.close()
            self._session = None
            self.worker.session = None

    def notify(self) -> None:
        """Events were committed: dispatch now (cheap; safe to call often)."""
        self._dispatch_wake.set()

    async def retry_delivery(self, id: str) -> Record:
        """Manual retry (see `control.webhooks.worker.retry_delivery`), attempted
        promptly by this node."""
        rec = await retry_delivery(self.outbox, id, clock=self.clock)
        self.worker.poke({str(rec.data.get("endpoint_id"))})
        return rec

    def _on_enqueued(self, endpoint_ids: set[str]) -> None:
        self.worker.set_endpoints(self.dispatcher.endpoints)
        self.worker.poke(endpoint_ids)

    async def backlog(self) -> int:
        """Queued deliveries across endpoints (for health/metrics)."""
        total = 0
        for slot in list(self.worker.slots):
            total += await self.store.queue_depth(f"{QUEUE_PREFIX}:{slot}")
        return total

    # -- loops -------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        lease_ttl = max(5.0, 4 * self.config.poll_interval_s)
        while self._running:
            self._dispatch_wake.clear()
            more = False
            try:
                if await self.store.acquire_lease(DISPATCHER_LEASE, self.node_id, lease_ttl):
                    n = await self.dispatcher.dispatch_once()
                    more = n >= self.dispatcher.batch
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook dispatch failed")
                await asyncio.sleep(min(1.0, self.config.poll_interval_s))
            if more:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dispatch_wake.wait(), self.config.poll_interval_s)

    async def _deliver_loop(self) -> None:
        while self._running:
            self.worker.wake.clear()
            try:
                sleep = await self.worker.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery scheduling failed")
                sleep = min(1.0, self.config.poll_interval_s)
            if sleep <= 0:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.worker.wake.wait(), sleep)
