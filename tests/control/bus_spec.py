"""What every event bus transport must do, shared by the Redis and the local
(Unix datagram) tests: the others hear at once, the sender does not."""

from __future__ import annotations

import asyncio
import time

from control.eventbus import EVENTS, GRANTS, EventBus


class Heard:
    """A handler that records when it ran; `await next()` for the next time."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.at.append(time.monotonic())
        self.event.set()

    async def next(self, within: float = 2.0) -> float:
        await asyncio.wait_for(self.event.wait(), within)
        self.event.clear()
        return self.at[-1]


async def the_others_hear_at_once(a: EventBus, b: EventBus, *, within_s: float) -> None:
    """`a` raises EVENTS five times and GRANTS once: `b` hears each within
    `within_s`; `a` hears nothing of its own."""
    heard_a, heard_b, grants_b = Heard(), Heard(), Heard()
    a.on(EVENTS, heard_a)
    b.on(EVENTS, heard_b)
    b.on(GRANTS, grants_b)
    await a.start()
    await b.start()
    try:
        for _ in range(5):
            sent = time.monotonic()
            a.publish(EVENTS)
            assert await heard_b.next() - sent < within_s
        a.publish(GRANTS)
        await grants_b.next()
        await asyncio.sleep(0.1)
        assert heard_a.at == [] and len(heard_b.at) == 5 and len(grants_b.at) == 1
    finally:
        await a.stop()
        await b.stop()
