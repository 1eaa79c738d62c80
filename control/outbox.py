"""The one way state changes: `Outbox.commit(ops, events)` — the change and
its events in one store transaction (with what `stampers` add for those
events: timeline entries), then whoever delivers events (webhooks, SSE) is
woken through the `EventNotifier`, and this node's commit listeners (the
playback edge dropping cached grants) see the ops.

`Outbox.compare_and_set(attempt, what=...)` is the one read-modify-write:
`attempt()` reads what it needs and returns a `Change` (ops that carry the
versions they read, the events, the result); a `Conflict` on commit runs it
again after a jittered pause, a bounded number of times, then raises
`Contended`. Nothing is dropped: a caller either gets its result or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from control.store.base import Conflict, Event, EventDraft, Op, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

CAS_ATTEMPTS = 8
CAS_BACKOFF_S = 0.002
"""The first retry waits up to this long; each further one up to twice as long."""


class Contended(Conflict):
    """Every attempt of a compare-and-set lost its race: the record keeps changing."""


@dataclass(frozen=True, slots=True)
class Change(Generic[T]):
    """One attempt of a compare-and-set: the ops to commit (each with the
    version it read) and their events, and what the caller gets once they are
    committed. No ops and no events: nothing to change, `result` as it is."""

    result: T
    ops: Sequence[Op] = ()
    events: Sequence[EventDraft] = ()


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

    def __init__(self, store: Store, notifier: EventNotifier | None = None) -> None:
        self.store = store
        self.notifier = notifier or EventNotifier()
        self.listeners: list[Callable[[list[Event]], None]] = []
        self.op_listeners: list[Callable[[Sequence[Op]], None]] = []
        """Called with the ops of every commit on this node, events or not."""
        self.stampers: list[Callable[[Sequence[EventDraft]], Sequence[Op]]] = []
        """Ops a commit's events add to the same transaction (timeline entries)."""

    async def commit(self, ops: Sequence[Op], events: Sequence[EventDraft] = ()) -> list[Event]:
        if events and self.stampers:
            ops = [*ops, *(op for stamp in self.stampers for op in stamp(events))]
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

    async def compare_and_set(
        self,
        attempt: Callable[[], Awaitable[Change[T]]],
        *,
        what: str,
        attempts: int = CAS_ATTEMPTS,
    ) -> T:
        """`attempt()` until its change commits (or there is none); `Contended`
        after `attempts` lost races. `what` names the record for the error."""
        for n in range(attempts):
            change = await attempt()
            if not change.ops and not change.events:
                return change.result
            try:
                await self.commit(change.ops, change.events)
            except Contended:
                raise
            except Conflict:
                if n + 1 < attempts:
                    await asyncio.sleep(random.uniform(0, CAS_BACKOFF_S * 2**n))
                continue
            return change.result
        raise Contended(f"{what} keeps changing")
