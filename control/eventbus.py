"""The event bus: what one node tells the others the moment it commits.

A commit on one node changes what every node should do at once: SSE streams
and the webhook dispatcher have new events to read (``events``), a playback
edge grant may be revoked (``grants``: a deleted stream, asset, room,
playback id or signing key), an API key may be revoked (``api_keys``). The
store is the truth; the bus only wakes the nodes that would otherwise find
out by polling (0.5 s) or by a cache expiring (1 to 2 s).

On Redis the transport is Redis pub/sub (`BusTransport`: `RedisStore`
provides it); with SQLite it is Unix datagrams between the processes sharing
the database file, the workers of one machine (`control.local_bus`). Messages are
``"<node id> <topic>"`` (a topic may carry an argument,
``<topic>:<argument>``); a node ignores its own. A publish never waits for the
network on the caller's path: at most one is in flight per topic, and a topic
raised again meanwhile is sent once more when it lands. A subscriber that
loses its connection reconnects with backoff; whatever it missed meanwhile is
found by the polling it also does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)

EVENTS = "events"
GRANTS = "grants"
API_KEYS = "api_keys"
TOPICS = (EVENTS, GRANTS, API_KEYS)
KICK = "kick"
"""With an argument (``kick:<live stream id>:<reason>``): the API ended or took
over a publication; the node holding its publisher drops it at once (it also
finds out from the store within a heartbeat)."""


class Subscription(Protocol):
    def __aiter__(self) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class BusTransport(Protocol):
    async def publish(self, channel: str, message: str) -> None: ...

    async def subscribe(self, channel: str) -> Subscription:
        """Subscribed when it returns: every message published from then on."""
        ...


class EventBus:
    CHANNEL = "bus"

    def __init__(self, node_id: str, transport: BusTransport | None) -> None:
        """`transport` None: a node alone (an in-memory store); `publish` does nothing."""
        self.node_id = node_id
        self.transport = transport
        self._handlers: dict[str, list[Callable[[], None]]] = {t: [] for t in TOPICS}
        self._arg_handlers: dict[str, list[Callable[[str], None]]] = {KICK: []}
        self._in_flight: set[str] = set()
        self._again: set[str] = set()
        self._listener: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.received = 0
        """Messages from other nodes handled (for tests and metrics)."""

    def on(self, topic: str, handler: Callable[[], None]) -> None:
        """Run `handler` when another node raises `topic`."""
        self._handlers[topic].append(handler)

    def on_argument(self, topic: str, handler: Callable[[str], None]) -> None:
        """Run `handler(argument)` when another node raises ``topic:argument``."""
        self._arg_handlers[topic].append(handler)

    def publish(self, topic: str) -> None:
        if self.transport is None or self._listener is None:
            return
        if topic in self._in_flight:
            self._again.add(topic)
            return
        self._in_flight.add(topic)
        task = asyncio.get_running_loop().create_task(self._send(topic))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, topic: str) -> None:
        assert self.transport is not None
        try:
            while True:
                self._again.discard(topic)
                try:
                    await self.transport.publish(self.CHANNEL, f"{self.node_id} {topic}")
                except Exception as exc:  # the others poll: a lost wake-up costs latency only
                    log.warning("event bus: publishing %s failed (%r)", topic, exc)
                if topic not in self._again:
                    return
        finally:
            self._in_flight.discard(topic)

    async def start(self) -> None:
        if self.transport is None or self._listener is not None:
            return
        ready = asyncio.Event()
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(ready), name="event-bus"
        )
        # subscribed before the node says it is ready: nothing raised after is missed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ready.wait(), 5.0)

    async def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        for task in list(self._sending):
            task.cancel()
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=2)

    async def _listen(self, ready: asyncio.Event) -> None:
        assert self.transport is not None
        delay = 0.2
        while True:
            try:
                subscription = await self.transport.subscribe(self.CHANNEL)
                ready.set()
                try:
                    async for message in subscription:
                        self._handle(message)
                        delay = 0.2
                finally:
                    with contextlib.suppress(Exception):
                        await subscription.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event bus: subscription lost (%r), reconnecting", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _handle(self, message: str) -> None:
        sender, _, topic = message.partition(" ")
        if sender == self.node_id:
            return
        name, with_argument, argument = topic.partition(":")
        if with_argument:
            handlers: list[Callable[[], None]] = [
                functools.partial(h, argument) for h in self._arg_handlers.get(name, ())
            ]
        else:
            handlers = self._handlers.get(topic, [])
        if not handlers:
            return
        self.received += 1
        for handler in handlers:
            try:
                handler()
            except Exception:
                log.exception("event bus: handler for %s failed", name)
