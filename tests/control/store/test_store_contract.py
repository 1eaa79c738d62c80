"""The Store contract: every test runs against SQLite and against a real Redis."""

from __future__ import annotations

import asyncio

import pytest

from control.store.base import Conflict, Delete, EventDraft, Put, Store
from tests.support.stores import TestClock

C = "things"


async def put(store: Store, id: str, data: dict | None = None, **kw: object) -> None:
    await store.commit([Put(C, id, data or {"n": id}, **kw)])  # type: ignore[arg-type]


# -- records and compare-and-set ------------------------------------------------------


async def test_create_then_get_returns_version_1_and_data(store: Store) -> None:
    await store.commit([Put(C, "a", {"x": 1, "nested": {"ok": True}})])
    rec = await store.get(C, "a")
    assert rec is not None
    assert (rec.collection, rec.id, rec.version) == (C, "a", 1)
    assert rec.data == {"x": 1, "nested": {"ok": True}}
    assert await store.get(C, "missing") is None
    assert await store.get("other", "a") is None


async def test_create_twice_conflicts(store: Store) -> None:
    await put(store, "a")
    with pytest.raises(Conflict):
        await put(store, "a")


async def test_replace_needs_the_current_version(store: Store, clock: TestClock) -> None:
    await put(store, "a", {"v": 1})
    first = await store.get(C, "a")
    assert first is not None
    clock.advance(5)
    await store.commit([Put(C, "a", {"v": 2}, expect_version=1)])
    with pytest.raises(Conflict):
        await store.commit([Put(C, "a", {"v": 3}, expect_version=1)])
    rec = await store.get(C, "a")
    assert rec is not None and rec.version == 2 and rec.data == {"v": 2}
    assert rec.created_at == first.created_at, "created_at survives updates"


async def test_replace_of_missing_record_conflicts(store: Store) -> None:
    with pytest.raises(Conflict):
        await store.commit([Put(C, "nope", {}, expect_version=1)])


async def test_unconditional_put_upserts(store: Store) -> None:
    await store.commit([Put(C, "a", {"v": 1}, expect_version=None)])
    await store.commit([Put(C, "a", {"v": 2}, expect_version=None)])
    rec = await store.get(C, "a")
    assert rec is not None and rec.version == 2 and rec.data == {"v": 2}


async def test_delete_with_and_without_version(store: Store) -> None:
    await put(store, "a")
    with pytest.raises(Conflict):
        await store.commit([Delete(C, "a", expect_version=7)])
    await store.commit([Delete(C, "a", expect_version=1)])
    assert await store.get(C, "a") is None
    await store.commit([Delete(C, "a")])  # deleting a missing record is a no-op
    with pytest.raises(Conflict):
        await store.commit([Delete(C, "a", expect_version=1)])
    await put(store, "a")  # the id can be reused, starting again at version 1
    rec = await store.get(C, "a")
    assert rec is not None and rec.version == 1


async def test_concurrent_cas_has_exactly_one_winner(store: Store) -> None:
    await put(store, "a", {"v": 0})
    results = await asyncio.gather(
        *(store.commit([Put(C, "a", {"v": i}, expect_version=1)]) for i in range(10)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))


# -- unique indexes -------------------------------------------------------------------------


async def test_unique_value_is_exclusive_and_found_by_get_by(store: Store) -> None:
    await put(store, "a", unique={"key": "k1"})
    with pytest.raises(Conflict):
        await put(store, "b", unique={"key": "k1"})
    assert await store.get(C, "b") is None
    found = await store.get_by(C, "key", "k1")
    assert found is not None and found.id == "a"
    assert await store.get_by(C, "key", "k2") is None
    assert await store.get_by("other", "key", "k1") is None
    await put(store, "c", unique={"other_index": "k1"})  # indexes are independent


async def test_unique_value_is_released_on_update_and_delete(store: Store) -> None:
    await put(store, "a", unique={"key": "k1"})
    await store.commit([Put(C, "a", {"rotated": True}, expect_version=1, unique={"key": "k2"})])
    assert await store.get_by(C, "key", "k1") is None
    got = await store.get_by(C, "key", "k2")
    assert got is not None and got.id == "a"
    await put(store, "b", unique={"key": "k1"})  # released value can be taken
    await store.commit([Put(C, "a", {}, expect_version=2)])  # no unique → all released
    assert await store.get_by(C, "key", "k2") is None
    await store.commit([Put(C, "a", {}, expect_version=3, unique={"key": "k2"})])
    await store.commit([Delete(C, "a")])
    assert await store.get_by(C, "key", "k2") is None
    await put(store, "c", unique={"key": "k2"})


async def test_putting_the_same_unique_value_again_is_fine(store: Store) -> None:
    await put(store, "a", unique={"key": "k1"})
    await store.commit([Put(C, "a", {"x": 2}, expect_version=1, unique={"key": "k1"})])
    got = await store.get_by(C, "key", "k1")
    assert got is not None and got.data == {"x": 2}


async def test_unique_can_move_between_records_in_one_batch(store: Store) -> None:
    await put(store, "a", unique={"key": "k1"})
    await put(store, "b")
    await store.commit(
        [
            Put(C, "a", {}, expect_version=1, unique={}),
            Put(C, "b", {}, expect_version=1, unique={"key": "k1"}),
        ]
    )
    got = await store.get_by(C, "key", "k1")
    assert got is not None and got.id == "b"


async def test_unique_taken_before_release_in_batch_order_conflicts(store: Store) -> None:
    await put(store, "a", unique={"key": "k1"})
    await put(store, "b")
    with pytest.raises(Conflict):
        await store.commit(
            [
                Put(C, "b", {}, expect_version=1, unique={"key": "k1"}),
                Put(C, "a", {}, expect_version=1, unique={}),
            ]
        )
    got = await store.get_by(C, "key", "k1")
    assert got is not None and got.id == "a"


# -- atomicity (outbox) --------------------------------------------------------------------


async def test_a_failing_op_writes_nothing_and_appends_no_event(store: Store) -> None:
    await put(store, "a", unique={"key": "taken"})
    before = await store.last_event_cursor()
    with pytest.raises(Conflict):
        await store.commit(
            [
                Put(C, "new1", {"x": 1}, unique={"key": "fresh"}, tags={"t": "v"}),
                Put(C, "a", {"changed": True}, expect_version=None, unique={"key": "taken"}),
                Delete(C, "gone"),
                Put(C, "new2", {}, unique={"key": "taken"}),
            ],
            [EventDraft("thing.created", "new1", {}), EventDraft("thing.created", "new2", {})],
        )
    assert await store.get(C, "new1") is None
    assert await store.get(C, "new2") is None
    a = await store.get(C, "a")
    assert a is not None and a.version == 1 and a.data == {"n": "a"}
    assert await store.get_by(C, "key", "fresh") is None
    got = await store.get_by(C, "key", "taken")
    assert got is not None and got.id == "a"
    assert (await store.list(C, where=("t", "v"))).data == []
    with pytest.raises(Conflict):  # a version mismatch as the last op, too
        await store.commit(
            [Put(C, "new3", {}), Put(C, "a", {}, expect_version=5)],
            [EventDraft("thing.created", "new3", {})],
        )
    assert await store.get(C, "new3") is None
    assert await store.last_event_cursor() == before
    assert await store.events_after(before) == []
    # the per-resource sequence did not move either
    (ev,) = await store.commit([], [EventDraft("thing.created", "new1", {})])
    assert ev.sequence == 1


async def test_ops_in_a_batch_see_earlier_ops(store: Store) -> None:
    await store.commit([Put(C, "a", {"v": 1}), Put(C, "a", {"v": 2}, expect_version=1)])
    rec = await store.get(C, "a")
    assert rec is not None and rec.version == 2 and rec.data == {"v": 2}
    await store.commit([Delete(C, "a", expect_version=2), Put(C, "a", {"v": 3})])
    rec = await store.get(C, "a")
    assert rec is not None and rec.version == 1 and rec.data == {"v": 3}


async def test_commit_returns_the_events_it_appended(store: Store) -> None:
    events = await store.commit(
        [Put(C, "a", {})],
        [EventDraft("thing.created", "a", {"k": [1, 2]}), EventDraft("thing.ready", "a", {})],
    )
    assert [e.type for e in events] == ["thing.created", "thing.ready"]
    assert [e.sequence for e in events] == [1, 2]
    assert events[1].cursor == events[0].cursor + 1
    assert events[0].id != events[1].id and events[0].id.startswith("ev_")
    assert await store.events_after(events[0].cursor - 1) == events


# -- listing --------------------------------------------------------------------------------


async def test_list_is_newest_first_with_pagination(store: Store, clock: TestClock) -> None:
    for i in range(7):
        await put(store, f"r{i}")
        clock.advance(1)
    page = await store.list(C, limit=3)
    assert [r.id for r in page.data] == ["r6", "r5", "r4"] and page.has_more
    page = await store.list(C, limit=3, starting_after="r4")
    assert [r.id for r in page.data] == ["r3", "r2", "r1"] and page.has_more
    page = await store.list(C, limit=3, starting_after="r1")
    assert [r.id for r in page.data] == ["r0"] and not page.has_more
    page = await store.list(C, limit=7)
    assert len(page.data) == 7 and not page.has_more
    assert (await store.list("empty")).data == []
    assert (await store.list(C, starting_after="unknown")).data == []


async def test_list_breaks_created_at_ties_by_id_descending(store: Store, clock: TestClock) -> None:
    clock.freeze()
    await store.commit([Put(C, i, {}) for i in ("b", "d", "a", "c")])
    page = await store.list(C, limit=2)
    assert [r.id for r in page.data] == ["d", "c"]
    page = await store.list(C, limit=5, starting_after="c")
    assert [r.id for r in page.data] == ["b", "a"] and not page.has_more


async def test_list_where_filters_on_tags_and_follows_updates(
    store: Store, clock: TestClock
) -> None:
    for i in range(5):
        await put(store, f"r{i}", tags={"parent": "p1" if i % 2 == 0 else "p2"})
        clock.advance(1)
    page = await store.list(C, where=("parent", "p1"))
    assert [r.id for r in page.data] == ["r4", "r2", "r0"]
    page = await store.list(C, where=("parent", "p1"), limit=1, starting_after="r4")
    assert [r.id for r in page.data] == ["r2"] and page.has_more
    await store.commit([Put(C, "r2", {}, expect_version=1, tags={"parent": "p2"})])
    assert [r.id for r in (await store.list(C, where=("parent", "p1"))).data] == ["r4", "r0"]
    assert [r.id for r in (await store.list(C, where=("parent", "p2"))).data] == [
        "r3",
        "r2",
        "r1",
    ]
    await store.commit([Delete(C, "r4")])
    assert [r.id for r in (await store.list(C, where=("parent", "p1"))).data] == ["r0"]
    assert (await store.list(C, where=("parent", "nobody"))).data == []


# -- events ---------------------------------------------------------------------------------


async def test_event_cursor_and_per_resource_sequence(store: Store) -> None:
    assert await store.last_event_cursor() == 0
    assert await store.events_after(0) == []
    await store.commit([], [EventDraft("x.a", "r1", {"i": 0})])
    await store.commit([], [EventDraft("x.a", "r2", {"i": 1}), EventDraft("x.b", "r1", {"i": 2})])
    await store.commit([], [EventDraft("x.c", "r1", {"i": 3})])
    events = await store.events_after(0)
    assert [e.data["i"] for e in events] == [0, 1, 2, 3]
    cursors = [e.cursor for e in events]
    assert cursors == sorted(cursors) and len(set(cursors)) == 4
    assert [(e.resource_id, e.sequence) for e in events] == [
        ("r1", 1),
        ("r2", 1),
        ("r1", 2),
        ("r1", 3),
    ]
    assert await store.last_event_cursor() == cursors[-1]
    assert [e.data["i"] for e in await store.events_after(cursors[1])] == [2, 3]
    assert [e.data["i"] for e in await store.events_after(0, limit=2)] == [0, 1]
    assert await store.events_after(cursors[-1]) == []
    assert all(e.created_at > 0 for e in events)


# -- queues ---------------------------------------------------------------------------------


async def test_enqueue_is_idempotent_by_id(store: Store) -> None:
    assert await store.enqueue("q", "t1", {"a": 1})
    assert not await store.enqueue("q", "t1", {"a": 2})
    assert await store.queue_depth("q") == 1
    (task,) = await store.lease("q", "w1", 30)
    assert task.payload == {"a": 1} and task.attempts == 0 and task.lease_owner == "w1"


async def test_lease_returns_due_tasks_in_order(store: Store, clock: TestClock) -> None:
    now = clock()
    await store.enqueue("q", "later", {}, run_at=now + 60)
    await store.enqueue("q", "second", {}, run_at=now - 1)
    await store.enqueue("q", "first", {}, run_at=now - 2)
    await store.enqueue("other", "x", {})
    tasks = await store.lease("q", "w1", 30, limit=10)
    assert [t.id for t in tasks] == ["first", "second"]
    assert await store.lease("q", "w2", 30) == []
    assert await store.next_due("q") == pytest.approx(now + 30, abs=1)  # a lease expiry
    clock.advance(61)
    tasks = await store.lease("q", "w2", 30, limit=1)
    assert [t.id for t in tasks] in (["first"], ["second"], ["later"])


async def test_two_concurrent_owners_never_get_the_same_task(store: Store) -> None:
    for i in range(60):
        await store.enqueue("q", f"t{i}", {"i": i})
    results = await asyncio.gather(*(store.lease("q", f"w{j}", 30, limit=7) for j in range(12)))
    ids = [t.id for batch in results for t in batch]
    assert len(ids) == len(set(ids)) == 60
    for j, batch in enumerate(results):
        assert all(t.lease_owner == f"w{j}" for t in batch)


async def test_expired_lease_makes_the_task_due_again(store: Store, clock: TestClock) -> None:
    await store.enqueue("q", "t", {"p": 1})
    await store.lease("q", "w1", 10)
    assert await store.lease("q", "w2", 10) == []
    clock.advance(11)
    (second,) = await store.lease("q", "w2", 10)
    assert second.id == "t" and second.attempts == 1 and second.payload == {"p": 1}
    assert not await store.complete("q", "t", "w1"), "the first owner lost its lease"
    assert not await store.extend_lease("q", "t", "w1", 10)
    assert not await store.retry_at("q", "t", "w1", clock())
    assert await store.complete("q", "t", "w2")
    assert await store.queue_depth("q") == 0


async def test_extend_lease_keeps_the_task(store: Store, clock: TestClock) -> None:
    await store.enqueue("q", "t", {})
    await store.lease("q", "w1", 10)
    clock.advance(8)
    assert await store.extend_lease("q", "t", "w1", 10)
    clock.advance(8)
    assert await store.lease("q", "w2", 10) == []
    clock.advance(3)
    assert [t.id for t in await store.lease("q", "w2", 10)] == ["t"]


async def test_complete_by_a_non_owner_fails(store: Store) -> None:
    await store.enqueue("q", "t", {})
    assert not await store.complete("q", "t", "w1"), "not leased at all"
    await store.lease("q", "w1", 30)
    assert not await store.complete("q", "t", "w2")
    assert not await store.complete("q", "nope", "w1")
    assert await store.queue_depth("q") == 1
    assert await store.complete("q", "t", "w1")
    assert not await store.complete("q", "t", "w1")
    assert await store.queue_depth("q") == 0
    assert await store.next_due("q") is None


async def test_retry_at_releases_and_reschedules(store: Store, clock: TestClock) -> None:
    await store.enqueue("q", "t", {"k": "v"})
    await store.lease("q", "w1", 30)
    when = clock() + 5
    assert await store.retry_at("q", "t", "w1", when)
    assert not await store.complete("q", "t", "w1"), "retry_at released the lease"
    assert await store.next_due("q") == pytest.approx(when)
    assert await store.lease("q", "w1", 30) == []
    clock.advance(6)
    (again,) = await store.lease("q", "w2", 30)
    assert again.attempts == 1 and again.run_at == pytest.approx(when)
    assert again.payload == {"k": "v"}


# -- kv with TTL ------------------------------------------------------------------------


async def test_kv_set_get_delete(store: Store) -> None:
    assert await store.kv_get("k") is None
    await store.kv_set("k", "v1")
    assert await store.kv_get("k") == "v1"
    await store.kv_set("k", "v2")
    assert await store.kv_get("k") == "v2"
    await store.kv_delete("k")
    assert await store.kv_get("k") is None
    await store.kv_delete("k")


async def test_kv_ttl_expires(store: Store) -> None:
    await store.kv_set("short", "x", ttl_s=0.2)
    await store.kv_set("long", "y", ttl_s=30)
    assert await store.kv_get("short") == "x"
    assert not await store.kv_set_if_absent("short", "z", ttl_s=1)
    await asyncio.sleep(0.35)
    assert await store.kv_get("short") is None
    assert await store.kv_get("long") == "y"
    assert await store.kv_set_if_absent("short", "z", ttl_s=1), "expired keys are absent"
    assert await store.kv_get("short") == "z"


async def test_kv_replace_swaps_only_the_expected_value_and_has_one_winner(
    store: Store,
) -> None:
    assert not await store.kv_replace("host", "a", "b", 30), "nothing to replace"
    assert await store.kv_get("host") is None
    await store.kv_set("host", "a", ttl_s=30)
    assert not await store.kv_replace("host", "x", "b", 30)
    assert await store.kv_get("host") == "a"
    results = await asyncio.gather(*(store.kv_replace("host", "a", f"n{i}", 30) for i in range(8)))
    assert sum(results) == 1
    assert await store.kv_get("host") == f"n{results.index(True)}"
    await store.kv_set("short", "a", ttl_s=0.2)
    await asyncio.sleep(0.35)
    assert not await store.kv_replace("short", "a", "b", 30), "an expired value is gone"


async def test_kv_set_if_absent_has_one_winner(store: Store) -> None:
    results = await asyncio.gather(*(store.kv_set_if_absent("k", str(i), 30) for i in range(10)))
    assert sum(results) == 1
    assert await store.kv_get("k") == str(results.index(True))


# -- token buckets ------------------------------------------------------------------------


async def test_token_bucket_burst_refill_and_retry_after(store: Store, clock: TestClock) -> None:
    clock.freeze()
    results = [await store.take_token("b", rate_per_s=2.0, burst=5) for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert [r.remaining for r in results[:5]] == [4, 3, 2, 1, 0]
    denied = results[5]
    assert denied.retry_after_s == pytest.approx(0.5)
    assert denied.reset_s == pytest.approx(2.5)
    assert results[0].retry_after_s == 0
    clock.advance(0.5)
    ok = await store.take_token("b", rate_per_s=2.0, burst=5)
    assert ok.allowed and ok.remaining == 0
    clock.advance(100)
    full = await store.take_token("b", rate_per_s=2.0, burst=5)
    assert full.allowed and full.remaining == 4, "refill is capped at burst"
    other = await store.take_token("b2", rate_per_s=2.0, burst=5)
    assert other.remaining == 4, "buckets are independent"


async def test_token_bucket_is_exact_under_concurrency(store: Store, clock: TestClock) -> None:
    clock.freeze()
    results = await asyncio.gather(*(store.take_token("c", 1.0, 10) for _ in range(25)))
    assert sum(r.allowed for r in results) == 10


# -- named leases ----------------------------------------------------------------------------


async def test_named_lease_take_renew_release(store: Store) -> None:
    assert await store.acquire_lease("timer:1", "n1", 30)
    assert not await store.acquire_lease("timer:1", "n2", 30)
    assert await store.acquire_lease("timer:1", "n1", 30), "the holder renews"
    await store.release_lease("timer:1", "n2")  # not the holder: no effect
    assert not await store.acquire_lease("timer:1", "n2", 30)
    await store.release_lease("timer:1", "n1")
    assert await store.acquire_lease("timer:1", "n2", 30)
    assert await store.acquire_lease("timer:2", "n1", 30)


async def test_named_lease_expires(store: Store) -> None:
    assert await store.acquire_lease("l", "n1", 0.2)
    assert not await store.acquire_lease("l", "n2", 0.2)
    await asyncio.sleep(0.35)
    assert await store.acquire_lease("l", "n2", 5)
    assert not await store.acquire_lease("l", "n1", 5)


async def test_ping(store: Store) -> None:
    assert await store.ping()


# -- additions: get_many, settle ---------------------------------------------------------------


async def test_get_many_keeps_order_and_marks_missing(store: Store) -> None:
    await put(store, "a", {"v": "A"})
    await put(store, "b", {"v": "B"})
    got = await store.get_many(C, ["b", "zz", "a"])
    assert [r.data["v"] if r else None for r in got] == ["B", None, "A"]
    assert await store.get_many(C, []) == []


async def test_settle_applies_ops_and_completes_or_reschedules(
    store: Store, clock: TestClock
) -> None:
    await put(store, "d1", {"attempts": 0})
    await store.enqueue("q", "t", {})
    await store.lease("q", "w1", 30)
    when = clock() + 10
    ok = await store.settle(
        "q", "t", "w1", [Put(C, "d1", {"attempts": 1}, expect_version=1)], run_at=when
    )
    assert ok
    rec = await store.get(C, "d1")
    assert rec is not None and rec.data == {"attempts": 1}
    assert await store.next_due("q") == pytest.approx(when)
    assert not await store.complete("q", "t", "w1"), "released by settle(run_at=...)"
    clock.advance(11)
    await store.lease("q", "w2", 30)
    assert await store.settle("q", "t", "w2", [Put(C, "d1", {"attempts": 2}, expect_version=2)])
    assert await store.queue_depth("q") == 0


async def test_settle_is_atomic_and_reports_a_lost_lease(store: Store, clock: TestClock) -> None:
    await put(store, "d1", {"n": 0})
    await store.enqueue("q", "t", {})
    await store.lease("q", "w1", 30)
    with pytest.raises(Conflict):
        await store.settle("q", "t", "w1", [Put(C, "d1", {"n": 9}, expect_version=5)])
    assert await store.queue_depth("q") == 1
    assert await store.complete("q", "t", "w1") is True  # the lease was untouched
    await store.enqueue("q", "t2", {})
    await store.lease("q", "w1", 5)
    clock.advance(6)
    await store.lease("q", "w2", 5)
    lost = await store.settle("q", "t2", "w1", [Put(C, "d1", {"n": 1}, expect_version=1)])
    assert lost is False
    rec = await store.get(C, "d1")
    assert rec is not None and rec.data == {"n": 1}, "ops apply even when the lease was lost"
    assert await store.queue_depth("q") == 1


async def test_unicode_and_awkward_values_round_trip(store: Store) -> None:
    data = {"name": "café 🎥", "quote": 'a"b\\c', "empty": {}, "list": [], "n": 2**53 - 1}
    (ev,) = await store.commit(
        [Put(C, "u:1", data, unique={"key": "ключ:1"}, tags={"owner": "ü ser"})],
        [EventDraft("x.y", "res:é", data)],
    )
    rec = await store.get(C, "u:1")
    assert rec is not None and rec.data == data
    by = await store.get_by(C, "key", "ключ:1")
    assert by is not None and by.id == "u:1"
    assert [r.id for r in (await store.list(C, where=("owner", "ü ser"))).data] == ["u:1"]
    (again,) = await store.events_after(ev.cursor - 1)
    assert again == ev and again.data == data


async def test_concurrent_commits_fail_alone(store: Store) -> None:
    """Many commits at once (SQLite groups them into one transaction): a
    conflicting one is rolled back alone and appends nothing."""
    await put(store, "taken")
    results = await asyncio.gather(
        *(
            store.commit(
                [Put(C, "taken" if i % 4 == 0 else f"c{i}", {"i": i})],
                [EventDraft("thing.created", "same-resource", {"i": i})],
            )
            for i in range(20)
        ),
        return_exceptions=True,
    )
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [0, 4, 8, 12, 16]
    assert all(isinstance(results[i], Conflict) for i in failed)
    events = await store.events_after(0)
    assert sorted(e.data["i"] for e in events) == [i for i in range(20) if i % 4]
    assert [e.sequence for e in events] == list(range(1, 16))
    for i in range(20):
        assert (await store.get(C, f"c{i}") is None) == (i % 4 == 0)


# -- retention and upgrades -------------------------------------------------------------


async def test_trim_events_deletes_the_oldest_and_remembers_how_far(
    store: Store, clock: TestClock
) -> None:
    for i in range(3):
        await store.commit([], [EventDraft("t.old", f"r{i}", {"i": i})])
    clock.advance(100)
    cutoff = clock() - 1
    await store.commit([], [EventDraft("t.new", "r9", {"i": 9})])
    assert await store.events_trimmed_through() == 0
    assert await store.trim_events(cutoff, limit=2) == 2
    assert await store.events_trimmed_through() == 2
    assert await store.trim_events(cutoff) == 1
    assert await store.trim_events(cutoff) == 0
    left = await store.events_after(0)
    assert [e.type for e in left] == ["t.new"] and left[0].cursor == 4
    assert await store.events_trimmed_through() == 3
    assert await store.last_event_cursor() == 4
    # cursors keep increasing after a trim, even when the log was emptied
    assert await store.trim_events(clock() + 1) == 1
    assert await store.last_event_cursor() == 4
    (ev,) = await store.commit([], [EventDraft("t.after", "r9", {})])
    assert ev.cursor == 5 and ev.sequence == 2


async def test_rewrite_events_changes_data_only(store: Store) -> None:
    await store.commit([], [EventDraft("a.x", "r1", {"secret": "s1", "keep": 1})])
    await store.commit([], [EventDraft("a.y", "r2", {"keep": 2})])
    before = await store.events_after(0)

    def scrub(e: object) -> dict | None:  # type: ignore[type-arg]
        data = e.data  # type: ignore[attr-defined]
        return {k: v for k, v in data.items() if k != "secret"} if "secret" in data else None

    assert await store.rewrite_events(scrub) == 1
    after = await store.events_after(0)
    assert [e.data for e in after] == [{"keep": 1}, {"keep": 2}]
    assert [(e.cursor, e.id, e.sequence, e.type) for e in after] == [
        (e.cursor, e.id, e.sequence, e.type) for e in before
    ]
    assert await store.rewrite_events(scrub) == 0
    (ev,) = await store.commit([], [EventDraft("a.z", "r1", {})])
    assert ev.cursor == 3 and ev.sequence == 2


async def test_delete_created_before_drops_records_with_their_indexes(
    store: Store, clock: TestClock
) -> None:
    await store.commit([Put(C, "old1", {}, unique={"u": "x1"}, tags={"t": "a"})])
    await store.commit([Put(C, "old2", {}, tags={"t": "a"})])
    clock.advance(100)
    cutoff = clock() - 1
    await store.commit([Put(C, "new", {}, tags={"t": "a"})])
    await store.commit([Put("other", "old", {})])
    assert await store.delete_created_before(C, cutoff, limit=1) == 1
    assert await store.delete_created_before(C, cutoff) == 1
    assert await store.delete_created_before(C, cutoff) == 0
    assert [r.id for r in (await store.list(C)).data] == ["new"]
    assert [r.id for r in (await store.list(C, where=("t", "a"))).data] == ["new"]
    assert await store.get_by(C, "u", "x1") is None
    await store.commit([Put(C, "again", {}, unique={"u": "x1"})])  # the value is free
    assert await store.get("other", "old") is not None


async def test_sweep_expired_drops_idle_token_buckets(store: Store, clock: TestClock) -> None:
    for i in range(5):
        await store.take_token(f"ip:{i}", 1.0, 10)
    clock.advance(3600)
    await store.sweep_expired(idle_bucket_s=600)
    # a swept bucket starts full again: exactly what an idle bucket had refilled to
    result = await store.take_token("ip:0", 1.0, 10)
    assert result.allowed and result.remaining == 9


async def test_enqueue_in_a_commit_is_part_of_its_transaction(
    store: Store, clock: TestClock
) -> None:
    from control.store.base import Enqueue

    await store.commit([Put(C, "a", {}), Enqueue("jobs", "job:a", {"n": 1})])
    assert await store.queue_depth("jobs") == 1
    # a failing op takes its enqueue with it
    with pytest.raises(Conflict):
        await store.commit([Enqueue("jobs", "job:b", {"n": 2}), Put(C, "a", {}, expect_version=0)])
    assert await store.queue_depth("jobs") == 1
    # an id already queued is left as it is, like Store.enqueue
    await store.commit([Put(C, "c", {}), Enqueue("jobs", "job:a", {"n": 99})])
    later = clock() + 60
    await store.commit([Enqueue("jobs", "job:later", {"n": 3}, run_at=later)])
    (task,) = await store.lease("jobs", "w", 30)
    assert (task.id, task.payload, task.attempts) == ("job:a", {"n": 1}, 0)
    assert await store.next_due("jobs") is not None
    assert await store.complete("jobs", "job:a", "w")
    clock.advance(61)
    (due,) = await store.lease("jobs", "w", 30)
    assert due.id == "job:later" and abs(due.run_at - later) < 1e-3
