"""The SQLite store shared by processes of one machine (issue 15: the workers of
one `onair serve` share its database): every guarantee the store contract gives
one process holds across processes hammering the same file at once — one
lease winner, compare-and-set that loses nothing, a gap-free event sequence
per resource with strictly increasing cursors, every queued task run exactly
once, one winner of a TTL key.

Each scenario runs the same function in two spawned processes, released
together by a barrier, against one database file in WAL mode."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from control.store.base import Conflict, EventDraft, Put
from control.store.sqlite import SqliteStore

PROCESSES = 2


def _run(scenario: str, path: str, me: int, barrier: Any, out: Any) -> None:
    out.put((me, asyncio.run(_scenario(scenario, path, me, barrier))))


async def _scenario(scenario: str, path: str, me: int, barrier: Any) -> Any:
    store = SqliteStore(path)
    await store.open()
    try:
        await asyncio.to_thread(barrier.wait, 30)
        if scenario == "lease":
            return await store.acquire_lease("singleton", f"p{me}", 30)
        if scenario == "kv":
            won = await store.kv_set_if_absent("host", f"p{me}", 30)
            replaced = await store.kv_replace("host", "nobody", f"p{me}", 30)
            return (won, replaced)
        if scenario == "counter":
            conflicts = 0
            for _ in range(100):
                while True:
                    rec = await store.get("counters", "c")
                    assert rec is not None
                    try:
                        await store.commit(
                            [
                                Put(
                                    "counters",
                                    "c",
                                    {"n": rec.data["n"] + 1},
                                    expect_version=rec.version,
                                )
                            ],
                            [EventDraft("counter.incremented", "c", {"by": me})],
                        )
                        break
                    except Conflict:
                        conflicts += 1
            return conflicts
        if scenario == "queue":
            done: list[str] = []
            while True:
                tasks = await store.lease("jobs", f"p{me}", 30, limit=5)
                if not tasks:
                    if await store.queue_depth("jobs") == 0:
                        return done
                    await asyncio.sleep(0.01)
                    continue
                for task in tasks:
                    if await store.complete("jobs", task.id, f"p{me}"):
                        done.append(task.id)
        raise ValueError(scenario)
    finally:
        await store.close()


def _in_processes(scenario: str, path: Path) -> list[Any]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_run, args=(scenario, str(path), me, barrier, out))
        for me in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        results = dict(out.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [results[me] for me in range(PROCESSES)]


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "onair.sqlite3"
    store = SqliteStore(path)
    await store.open()  # the schema, once
    await store.close()
    return path


async def test_one_process_wins_a_lease(db: Path) -> None:
    won = await asyncio.to_thread(_in_processes, "lease", db)
    assert sorted(won) == [False, True]


async def test_one_process_wins_a_ttl_key(db: Path) -> None:
    results = await asyncio.to_thread(_in_processes, "kv", db)
    assert sorted(won for won, _ in results) == [False, True]
    assert not any(replaced for _, replaced in results)


async def test_compare_and_set_across_processes_loses_no_update_or_event(db: Path) -> None:
    store = SqliteStore(db)
    await store.open()
    try:
        await store.commit([Put("counters", "c", {"n": 0})])
        conflicts = await asyncio.to_thread(_in_processes, "counter", db)
        rec = await store.get("counters", "c")
        assert rec is not None and rec.data["n"] == 100 * PROCESSES
        events = await store.events_after(0, 1000)
        mine = [e for e in events if e.type == "counter.incremented"]
        assert [e.sequence for e in mine] == list(range(1, 100 * PROCESSES + 1))
        cursors = [e.cursor for e in events]
        assert cursors == sorted(set(cursors))
        assert Counter(e.data["by"] for e in mine) == {me: 100 for me in range(PROCESSES)}
        print(f"conflicts retried: {conflicts}")
    finally:
        await store.close()


async def test_every_queued_task_runs_exactly_once_across_processes(db: Path) -> None:
    store = SqliteStore(db)
    await store.open()
    try:
        for i in range(200):
            await store.enqueue("jobs", f"t{i:03d}", {"i": i})
        done = await asyncio.to_thread(_in_processes, "queue", db)
    finally:
        await store.close()
    everything = [t for part in done for t in part]
    assert sorted(everything) == [f"t{i:03d}" for i in range(200)]
    print(f"tasks run per process: {[len(part) for part in done]}")
