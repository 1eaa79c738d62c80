"""The store through Redis Sentinel, on real processes (a master, a replica,
three Sentinels): a write counts only once a replica holds it, so SIGKILLing
the master loses nothing acknowledged, and the store follows the failover to
the new master by itself."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from control.store import open_store
from control.store.base import EventDraft, Put, StoreError
from control.store.redis import RedisStore
from tests.support.redis_server import SentinelSet, redis_sentinel_set, redis_server_binary

pytestmark = pytest.mark.redis


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    with redis_sentinel_set() as cluster:
        yield cluster


def sentinel_store(cluster: SentinelSet, **kw: int) -> RedisStore:
    store = open_store(
        None,
        Path("."),
        sentinels=[("127.0.0.1", p) for p in cluster.sentinel_ports],
        sentinel_master=cluster.MASTER,
        **kw,  # type: ignore[arg-type]
    )
    assert isinstance(store, RedisStore)
    store.prefix = f"s{uuid.uuid4().hex[:8]}:"
    return store


async def test_nothing_acknowledged_is_lost_when_the_master_dies(
    sentinel_set: SentinelSet,
) -> None:
    store = sentinel_store(sentinel_set)
    assert store.replicas_acked == 1  # the default with Sentinel
    await store.open()
    try:
        for i in range(50):
            await store.commit(
                [Put("things", f"t{i}", {"n": i})], [EventDraft("thing.made", f"t{i}", {})]
            )
        await store.enqueue("jobs", "j1", {"kind": "x"})
        await asyncio.to_thread(sentinel_set.kill_master)
        # writes fail while the Sentinels elect the replica, then go through again
        deadline = time.monotonic() + 30
        while True:
            try:
                await store.commit(
                    [Put("things", "after", {"n": -1})],
                    [EventDraft("thing.made", "after", {})],
                )
                break
            except (StoreError, RedisError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no failover within 30 s: {exc!r}") from exc
                await asyncio.sleep(0.2)
        assert sentinel_set.current_master_port() == sentinel_set.replica_port
        for i in range(50):
            rec = await store.get("things", f"t{i}")
            assert rec is not None and rec.data == {"n": i}
        events = await store.events_after(0, 1000)
        assert [e.resource_id for e in events] == [*(f"t{i}" for i in range(50)), "after"]
        assert await store.queue_depth("jobs") == 1
    finally:
        await store.close()


async def test_a_write_the_replica_does_not_take_in_time_is_an_error(
    sentinel_set: SentinelSet,
) -> None:
    store = sentinel_store(sentinel_set)
    store.replica_timeout_s = 0.3
    await store.open()
    replica = sentinel_set.procs[sentinel_set.replica_port]
    try:
        await store.commit([Put("things", "t0", {"n": 0})])
        replica.send_signal(signal.SIGSTOP)  # connected, but it acknowledges nothing
        with pytest.raises(StoreError, match="0 of 1 replica"):
            await store.commit([Put("things", "t1", {"n": 1})])
        replica.send_signal(signal.SIGCONT)
        await store.commit([Put("things", "t2", {"n": 2})])
    finally:
        replica.send_signal(signal.SIGCONT)
        await store.close()
