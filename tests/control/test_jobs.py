"""The durable job runner on the Store's leased queues (SQLite and Redis)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from control.jobs import (
    FAILED_JOBS,
    JobContext,
    JobRunner,
    PermanentJobError,
    QueueFull,
    enqueue_job,
)
from control.store.base import Store
from tests.support.stores import make_store


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    s = make_store(request.param, tmp_path, url)
    await s.open()
    yield s
    await s.close()


async def eventually(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_enqueue_job_is_idempotent_with_an_id_and_refuses_over_max_depth(
    store: Store,
) -> None:
    jid = await enqueue_job(store, "thumb", {"a": 1})
    assert jid.startswith("job_")
    assert await enqueue_job(store, "thumb", {}, job_id="fixed") == "fixed"
    assert await enqueue_job(store, "thumb", {}, job_id="fixed") == "fixed"
    assert await store.queue_depth("jobs") == 2
    with pytest.raises(QueueFull) as info:
        await enqueue_job(store, "thumb", {}, max_depth=2)
    assert info.value.retry_after_s > 0 and info.value.depth == 2
    await enqueue_job(store, "thumb", {}, max_depth=3)


async def test_jobs_run_once_each_with_bounded_concurrency(store: Store) -> None:
    seen: list[str] = []
    running = 0
    peak = 0

    async def work(job: JobContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        seen.append(job.payload["n"])
        running -= 1

    for i in range(12):
        await enqueue_job(store, "work", {"n": str(i)})
    runners = [
        JobRunner(store, "jobs", {"work": work}, concurrency=2, poll_interval_s=0.05)
        for _ in range(2)
    ]
    for r in runners:
        await r.start()
    await eventually(lambda: len(seen) == 12)
    for r in runners:
        await r.stop()
    assert sorted(seen, key=int) == [str(i) for i in range(12)]
    assert peak <= 4
    assert await store.queue_depth("jobs") == 0


async def test_failures_retry_with_backoff_then_dead_letter(store: Store) -> None:
    attempts: list[int] = []
    failures: list[str] = []

    async def flaky(job: JobContext) -> None:
        attempts.append(job.attempt)
        raise RuntimeError("boom")

    async def on_failure(job: JobContext, error: str) -> None:
        failures.append(error)

    await enqueue_job(store, "flaky", {"x": 1}, job_id="j1")
    runner = JobRunner(
        store,
        "jobs",
        {"flaky": flaky},
        max_attempts=3,
        backoff_base_s=0.05,
        poll_interval_s=0.05,
        on_failure=on_failure,
    )
    await runner.start()
    await eventually(lambda: failures)
    await runner.stop()
    assert attempts == [1, 2, 3]
    assert failures == ["RuntimeError: boom"]
    dead = await store.get(FAILED_JOBS, "jobs:j1")
    assert dead is not None and dead.data["kind"] == "flaky" and dead.data["attempts"] == 3
    assert await store.queue_depth("jobs") == 0


async def test_permanent_errors_and_unknown_kinds_fail_at_once(store: Store) -> None:
    calls = 0

    async def bad(job: JobContext) -> None:
        nonlocal calls
        calls += 1
        raise PermanentJobError("corrupt input")

    await enqueue_job(store, "bad", {}, job_id="p")
    await enqueue_job(store, "nobody-handles-this", {}, job_id="u")
    runner = JobRunner(store, "jobs", {"bad": bad}, poll_interval_s=0.05)
    await runner.start()
    await eventually(lambda: runner.failed == 2)
    await runner.stop()
    assert calls == 1
    assert (await store.get(FAILED_JOBS, "jobs:u")) is not None


async def test_heartbeat_keeps_a_long_job_and_progress_is_reported(store: Store) -> None:
    reported: list[float] = []
    done = asyncio.Event()

    async def long(job: JobContext) -> None:
        for pct in (25, 50, 75):
            await asyncio.sleep(0.15)
            await job.progress(pct)
        await asyncio.sleep(0.3)
        done.set()

    async def on_progress(job: JobContext, pct: float, info: dict[str, Any]) -> None:
        reported.append(pct)

    await enqueue_job(store, "long", {}, job_id="L")
    runner = JobRunner(
        store, "jobs", {"long": long}, lease_s=0.3, poll_interval_s=0.05, on_progress=on_progress
    )
    other = JobRunner(store, "jobs", {"long": long}, lease_s=0.3, poll_interval_s=0.05)
    await runner.start()
    await asyncio.sleep(0.05)
    await other.start()
    await asyncio.wait_for(done.wait(), 5)
    await eventually(lambda: runner.completed == 1)
    await runner.stop()
    await other.stop()
    assert reported == [25, 50, 75]
    assert other.completed == 0, "the lease never expired, so nobody else ran it"


async def test_a_dead_runner_s_job_is_picked_up_after_its_lease_expires(store: Store) -> None:
    ran: list[str] = []

    async def work(job: JobContext) -> None:
        ran.append(job.id)

    await enqueue_job(store, "work", {}, job_id="orphan")
    (task,) = await store.lease("jobs", "crashed-node", 0.3)
    assert task.id == "orphan"
    runner = JobRunner(store, "jobs", {"work": work}, poll_interval_s=0.05)
    await runner.start()
    await asyncio.sleep(0.1)
    assert ran == []
    await eventually(lambda: ran == ["orphan"])
    await runner.stop()
    assert await store.queue_depth("jobs") == 0


async def test_stop_cancels_unfinished_jobs_which_run_again_later(store: Store) -> None:
    started = asyncio.Event()
    finished: list[int] = []

    async def slow(job: JobContext) -> None:
        started.set()
        if job.attempt == 1:
            await asyncio.sleep(30)
        finished.append(job.attempt)

    await enqueue_job(store, "slow", {}, job_id="s")
    first = JobRunner(store, "jobs", {"slow": slow}, lease_s=0.3, poll_interval_s=0.05)
    await first.start()
    await asyncio.wait_for(started.wait(), 5)
    await first.stop(timeout_s=0.05)
    assert await store.queue_depth("jobs") == 1
    second = JobRunner(store, "jobs", {"slow": slow}, lease_s=0.3, poll_interval_s=0.05)
    await second.start()
    await eventually(lambda: finished == [2])
    await second.stop()
