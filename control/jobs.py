"""Durable jobs on the Store's leased queues (VOD packaging, thumbnails, MP4...).

    job_id = await enqueue_job(store, "vod.package", {"asset_id": a}, max_depth=1000)
    runner = JobRunner(store, "jobs", {"vod.package": package}, concurrency=2, lease_s=60)
    await runner.start(); ...; await runner.stop()

A handler is ``async def handler(job: JobContext) -> None``; it reads
``job.payload`` and may ``await job.progress(pct, **info)``. While it runs the
runner extends the lease every ``lease_s / 3`` (heartbeat); if the lease is
lost (this node stalled, another node took the job) the handler is cancelled.
A node that dies simply stops heartbeating: the lease expires and the job is
due again (the watchdog is the store's lease semantics). Failures retry with
exponential backoff up to ``max_attempts`` leases, then the job is written to
the ``failed_jobs`` collection and ``on_failure`` is called. Raise
`PermanentJobError` to fail without retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from control.ids import new_id
from control.store.base import Enqueue, Put, Store, Task

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "jobs"
FAILED_JOBS = "failed_jobs"


class QueueFull(Exception):
    """The queue is over its depth limit (the API answers 503 + Retry-After)."""

    def __init__(self, queue: str, depth: int, retry_after_s: float = 5.0) -> None:
        super().__init__(f"queue {queue!r} is full ({depth} jobs)")
        self.queue = queue
        self.depth = depth
        self.retry_after_s = retry_after_s


class PermanentJobError(Exception):
    """Raised by a handler: fail the job now, no retries."""


async def enqueue_job(
    store: Store,
    kind: str,
    payload: dict[str, Any],
    *,
    job_id: str | None = None,
    max_depth: int | None = None,
    queue: str = DEFAULT_QUEUE,
    run_at: float | None = None,
) -> str:
    """Queue a job; returns its id. With `job_id`, enqueueing twice is a no-op.
    Raises `QueueFull` when `max_depth` jobs are already queued."""
    if max_depth is not None:
        depth = await store.queue_depth(queue)
        if depth >= max_depth:
            raise QueueFull(queue, depth)
    jid = job_id or new_id("job")
    await store.enqueue(queue, jid, {"kind": kind, "payload": payload}, run_at=run_at)
    return jid


def job_op(
    kind: str, payload: dict[str, Any], *, job_id: str, queue: str = DEFAULT_QUEUE
) -> Enqueue:
    """The job as an op of a `Store.commit`: queued in the same transaction as the
    records it is about, so a crash cannot leave one without the other."""
    return Enqueue(queue, job_id, {"kind": kind, "payload": payload})


ProgressHook = Callable[["JobContext", float, dict[str, Any]], Awaitable[None]]
FailureHook = Callable[["JobContext", str], Awaitable[None]]


@dataclass(slots=True)
class JobContext:
    id: str
    kind: str
    payload: dict[str, Any]
    attempt: int
    """1 on the first run."""
    queue: str
    _runner: JobRunner = field(repr=False)
    last_progress: float | None = None
    _last_beat: float = 0.0

    async def progress(self, pct: float, **info: Any) -> None:
        """Report progress (0-100); also extends the lease (at most every
        lease_s/6, so frequent calls stay cheap)."""
        self.last_progress = float(pct)
        now = time.monotonic()
        if now - self._last_beat >= self._runner.lease_s / 6:
            self._last_beat = now
            await self._runner._heartbeat_now(self.id)
        if self._runner.on_progress is not None:
            await self._runner.on_progress(self, float(pct), info)


Handler = Callable[[JobContext], Coroutine[Any, Any, None]]


class JobRunner:
    def __init__(
        self,
        store: Store,
        queue: str = DEFAULT_QUEUE,
        handlers: Mapping[str, Handler] | None = None,
        *,
        concurrency: int = 2,
        lease_s: float = 60.0,
        max_attempts: int = 5,
        backoff_base_s: float = 2.0,
        backoff_max_s: float = 300.0,
        poll_interval_s: float = 0.5,
        owner: str | None = None,
        on_progress: ProgressHook | None = None,
        on_failure: FailureHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.queue = queue
        self.handlers = dict(handlers or {})
        self.concurrency = max(1, concurrency)
        self.lease_s = lease_s
        self.max_attempts = max(1, max_attempts)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.poll_interval_s = poll_interval_s
        self.owner = owner or new_id("jobrunner")
        self.on_progress = on_progress
        self.on_failure = on_failure
        self.clock = clock
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()
        self._stopping = False
        self.completed = 0
        self.failed = 0

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        if self._loop_task is None:
            self._stopping = False
            self._loop_task = asyncio.create_task(self._loop(), name=f"jobs-{self.queue}")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop leasing; wait for running jobs up to timeout_s, then cancel them
        (their leases expire and another node, or the next start, runs them)."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            # (a flag as well as cancel(): wait_for may swallow a cancellation on 3.11)
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        if self._running:
            _done, pending = await asyncio.wait(set(self._running.values()), timeout=timeout_s)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    def notify(self) -> None:
        """A job was enqueued: look now instead of at the next poll."""
        self._wake.set()

    # -- loop ------------------------------------------------------------------------
    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            sleep = self.poll_interval_s
            try:
                free = self.concurrency - len(self._running)
                if free > 0:
                    tasks: Sequence[Task] = await self.store.lease(
                        self.queue, self.owner, self.lease_s, limit=free
                    )
                    for task in tasks:
                        self._running[task.id] = asyncio.create_task(self._run(task))
                    if len(tasks) < free:
                        due = await self.store.next_due(self.queue)
                        if due is not None:
                            sleep = min(sleep, max(0.0, due - self.clock()))
                    else:
                        sleep = 0.0 if len(self._running) < self.concurrency else sleep
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job leasing failed", extra={"queue": self.queue})
            if self._stopping:
                return
            if sleep <= 0:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep)

    async def _heartbeat_now(self, job_id: str) -> None:
        if not await self.store.extend_lease(self.queue, job_id, self.owner, self.lease_s):
            self._lost.add(job_id)
            raise asyncio.CancelledError(f"lost the lease of job {job_id}")

    async def _heartbeat(self, job_id: str, work: asyncio.Task[None]) -> None:
        while not work.done():
            await asyncio.sleep(max(0.05, self.lease_s / 3))
            if work.done():
                return
            try:
                ok = await self.store.extend_lease(self.queue, job_id, self.owner, self.lease_s)
            except Exception:
                log.exception("job heartbeat failed", extra={"job_id": job_id})
                continue
            if not ok:
                log.warning("job lease lost; cancelling", extra={"job_id": job_id})
                self._lost.add(job_id)
                work.cancel()
                return

    def _backoff(self, attempt: int) -> float:
        cap = min(self.backoff_max_s, self.backoff_base_s * (2 ** max(0, attempt - 1)))
        return cap * (0.5 + 0.5 * random.random())

    async def _run(self, task: Task) -> None:
        kind = str(task.payload.get("kind", ""))
        ctx = JobContext(
            id=task.id,
            kind=kind,
            payload=dict(task.payload.get("payload") or {}),
            attempt=task.attempts + 1,
            queue=self.queue,
            _runner=self,
            _last_beat=time.monotonic(),
        )
        try:
            handler = self.handlers.get(kind)
            if handler is None:
                await self._fail(ctx, f"no handler for job kind {kind!r}")
                return
            if ctx.attempt > self.max_attempts:
                await self._fail(ctx, f"gave up after {self.max_attempts} attempts (lease expiry)")
                return
            work = asyncio.create_task(handler(ctx))
            beat = asyncio.create_task(self._heartbeat(task.id, work))
            try:
                await work
            finally:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
            if await self.store.complete(self.queue, task.id, self.owner):
                self.completed += 1
            else:
                log.warning("job finished after its lease was lost", extra={"job_id": task.id})
        except asyncio.CancelledError:
            if task.id in self._lost:
                return  # another runner owns it now
            raise  # shutdown: the lease expires and the job runs again
        except PermanentJobError as e:
            await self._fail(ctx, f"{type(e).__name__}: {e}")
        except Exception as e:
            error = f"{type(e).__name__}: {e}"[:500]
            log.warning("job failed", extra={"job_id": task.id, "kind": kind, "error": error})
            if ctx.attempt >= self.max_attempts:
                await self._fail(ctx, error)
            else:
                await self.store.retry_at(
                    self.queue, task.id, self.owner, self.clock() + self._backoff(ctx.attempt)
                )
        finally:
            self._running.pop(task.id, None)
            self._lost.discard(task.id)
            self._wake.set()

    async def _fail(self, ctx: JobContext, error: str) -> None:
        self.failed += 1
        with contextlib.suppress(Exception):
            await self.store.commit(
                [
                    Put(
                        FAILED_JOBS,
                        f"{self.queue}:{ctx.id}",
                        {
                            "queue": self.queue,
                            "job_id": ctx.id,
                            "kind": ctx.kind,
                            "payload": ctx.payload,
                            "attempts": ctx.attempt,
                            "error": error,
                            "failed_at": self.clock(),
                        },
                        expect_version=None,
                        tags={"kind": ctx.kind},
                    )
                ]
            )
        await self.store.complete(self.queue, ctx.id, self.owner)
        if self.on_failure is not None:
            try:
                await self.on_failure(ctx, error)
            except Exception:
                log.exception("job on_failure hook failed", extra={"job_id": ctx.id})
