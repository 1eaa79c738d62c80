"""The one way state changes: `Outbox.commit(ops, events)` — the change and
its events in one store transaction, then whoever delivers events (webhooks,
SSE) is woken through the `EventNotifier`, and this node's commit listeners
(the playback edge dropping cached grants) see the ops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from control.store.base import Event, EventDraft, Op, Store

log = logging.getLogger(__name__)


class EventNotifier:
    """Wakes SSE streams and the webhook worker right after a local commit.
    Waiters also poll, which covers events committed by other nodes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, max_wait_s: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max_wait_s)

    def close(self) -> None:
        self.closed = True
        self.notify()


class Outbox:
    """`commit(ops, events)`: the state change and its events in one store
    transaction, then wake whoever delivers events (webhooks, SSE)."""

    def __init__(self, store: Store, notifier: EventNotifier) -> None:
        self.store = store
        self.notifier = notifier
        self.listeners: list[Callable[[list[Event]], None]] = []
        self.op_listeners: list[Callable[[Sequence[Op]], None]] = []
        """Called with the ops of every commit on this node, events or not."""

    async def commit(self, ops: Sequence[Op], events: Sequence[EventDraft] = ()) -> list[Event]:
        committed = await self.store.commit(ops, events)
        for op_listener in self.op_listeners:
            try:
                op_listener(ops)
            except Exception:
                log.exception("outbox op listener failed")
        if committed:
            self.notifier.notify()
            for listener in self.listeners:
                try:
                    listener(committed)
                except Exception:
                    log.exception("outbox listener failed")
        return committed
