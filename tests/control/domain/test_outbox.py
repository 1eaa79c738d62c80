"""`Outbox.compare_and_set`: the one read-modify-write. A lost race reads again;
a record that keeps changing is an error, never a change or an event dropped."""

from __future__ import annotations

import pytest

from control.outbox import Change, Contended, Outbox
from control.store.base import Conflict, EventDraft, Put, Store
from tests.control.domain.conftest import events


async def test_a_change_commits_with_its_events_and_returns_its_result(
    store: Store, outbox: Outbox
) -> None:
    committed: list[object] = []
    outbox.op_listeners.append(committed.append)

    async def attempt() -> Change[str]:
        return Change("done", [Put("things", "t1", {"n": 1})], [EventDraft("thing.made", "t1", {})])

    assert await outbox.compare_and_set(attempt, what="thing t1") == "done"
    rec = await store.get("things", "t1")
    assert rec is not None and rec.data == {"n": 1}
    assert [e.type for e in await events(store, "t1")] == ["thing.made"]
    assert committed, "this node's commit listeners see the ops"


async def test_nothing_to_change_commits_nothing(store: Store, outbox: Outbox) -> None:
    async def attempt() -> Change[int]:
        return Change(7)

    assert await outbox.compare_and_set(attempt, what="x") == 7
    assert await events(store) == []


async def test_a_lost_race_reads_again_and_builds_on_what_won(store: Store, outbox: Outbox) -> None:
    await store.commit([Put("counters", "c", {"n": 0})])
    raced = False

    async def attempt() -> Change[int]:
        nonlocal raced
        rec = await store.get("counters", "c")
        assert rec is not None
        if not raced:  # another writer commits between our read and our commit
            raced = True
            await store.commit([Put("counters", "c", {"n": 10}, expect_version=rec.version)])
        n = rec.data["n"] + 1
        return Change(n, [Put("counters", "c", {"n": n}, expect_version=rec.version)])

    assert await outbox.compare_and_set(attempt, what="counter c") == 11
    rec = await store.get("counters", "c")
    assert rec is not None and rec.data == {"n": 11}


async def test_a_record_that_keeps_changing_is_contended_and_nothing_is_committed(
    store: Store, outbox: Outbox
) -> None:
    await store.commit([Put("counters", "c", {"n": 0})])
    tries = 0

    async def attempt() -> Change[None]:
        nonlocal tries
        tries += 1
        rec = await store.get("counters", "c")
        assert rec is not None
        await store.commit([Put("counters", "c", {"n": tries}, expect_version=rec.version)])
        put = Put("counters", "c", {"n": -1}, expect_version=rec.version)
        return Change(None, [put], [EventDraft("counter.set", "c", {})])

    with pytest.raises(Contended) as err:
        await outbox.compare_and_set(attempt, what="counter c", attempts=4)
    assert isinstance(err.value, Conflict) and "counter c" in str(err.value)
    assert tries == 4
    rec = await store.get("counters", "c")
    assert rec is not None and rec.data == {"n": 4}
    assert await events(store, "c") == []
