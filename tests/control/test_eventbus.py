"""The event bus on a real Redis: what one node raises reaches the others at once
(and not itself), raised again while in flight it is sent once more, and a
subscription cut by the server comes back by itself."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from control.eventbus import EVENTS, BusTransport, EventBus
from control.store.redis import RedisStore
from tests.control.bus_spec import Heard, the_others_hear_at_once

pytestmark = pytest.mark.redis


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    prefix = f"bus{uuid.uuid4().hex[:8]}:"
    a, b = RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def test_the_others_hear_at_once_and_the_sender_does_not(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    assert isinstance(stores[0], BusTransport)
    a, b = (EventBus(name, store) for name, store in zip(("a", "b"), stores, strict=True))
    await the_others_hear_at_once(a, b, within_s=0.1)


async def test_raised_again_while_in_flight_it_is_sent_once_more(
    stores: tuple[RedisStore, RedisStore],
) -> None:
    a, b = EventBus("a", stores[0]), EventBus("b", stores[1])
    heard = Heard()
    b.on(EVENTS, heard)
    await a.start()
    await b.start()
    try:
        for _ in range(50):
            a.publish(EVENTS)  # one in flight, the rest coalesced into one more
        await heard.next()
        await asyncio.sleep(0.2)
        assert 1 <= len(heard.at) <= 3
        a.publish(EVENTS)  # and a later one is never swallowed
        count = len(heard.at)
        await heard.next()
        assert len(heard.at) == count + 1
    finally:
        await a.stop()
        await b.stop()


async def test_a_subscription_cut_by_the_server_comes_back(
    redis_url: str, stores: tuple[RedisStore, RedisStore]
) -> None:
    a, b = EventBus("a", stores[0]), EventBus("b", stores[1])
    heard = Heard()
    b.on(EVENTS, heard)
    await a.start()
    await b.start()
    admin = aioredis.from_url(redis_url)
    try:
        assert await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
        deadline = time.monotonic() + 5
        while not heard.at and time.monotonic() < deadline:
            a.publish(EVENTS)
            await asyncio.sleep(0.1)
        assert heard.at, "no message after the subscription was cut"
    finally:
        await admin.aclose()
        await a.stop()
        await b.stop()
