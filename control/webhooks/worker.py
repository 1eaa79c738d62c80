"""The webhook delivery worker: leases tasks, POSTs signed requests, records attempts.

* One leased queue per endpoint (``webhooks:<endpoint_id>``); the scheduler
  leases from each endpoint at most ``per_endpoint_concurrency - in_flight``
  tasks and never more than the global ``max_in_flight`` — so a slow or dead
  endpoint can hold only its own slots, never another endpoint's.
* 2xx → succeeded. 408, 429, 5xx, other non-2xx/3xx, timeouts and connection
  errors → retried per `RetryPolicy` (exponential backoff + jitter, ≥ 24 h by
  default), then failed. Other 4xx → failed at once.
* Every attempt (time, status code, error, duration) is appended to the
  delivery record (compare-and-set) *before* the task is completed or
  rescheduled, so a crash at any point re-runs at most the one attempt.
* `retry_delivery()` is the manual retry (API: POST /v1/webhook-deliveries/{id}/retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from control.outbox import Change, Outbox
from control.store.base import Conflict, NotFound, Record, Store, Task
from control.webhooks.destination import error_class, refuse_literal
from control.webhooks.model import (
    DELIVERIES,
    DELIVERY_RECORDS,
    FAILED,
    MAX_LOGGED_ATTEMPTS,
    PENDING,
    SUCCEEDED,
    RetryPolicy,
    endpoint_enabled,
    endpoint_secrets,
    queue_for,
)
from control.webhooks.signing import webhook_headers

log = logging.getLogger(__name__)

USER_AGENT = "onair-webhooks/1"
RETRYABLE_4XX = frozenset({408, 429})


def _body_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(slots=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: float
    at: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        code = self.status_code
        if code is None:
            return True
        if 400 <= code < 500:
            return code in RETRYABLE_4XX
        return not self.ok


async def post_once(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    clock: Callable[[], float],
    *,
    allow_private: bool = False,
) -> Outcome:
    at = clock()
    t0 = time.perf_counter()
    try:
        if not allow_private:
            refuse_literal(url)  # names are checked by the session's resolver
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as resp:
            await resp.content.read(4096)
            return Outcome(resp.status, None, (time.perf_counter() - t0) * 1000, at)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
        log.info("webhook attempt failed", extra={"url": url, "error": f"{type(e).__name__}: {e}"})
        return Outcome(None, error_class(e), (time.perf_counter() - t0) * 1000, at)


def apply_outcome(
    data: dict[str, Any],
    outcome: Outcome,
    policy: RetryPolicy,
    now: float,
    *,
    one_shot: bool,
    rng: random.Random | None = None,
) -> tuple[dict[str, Any], float | None]:
    """The delivery after this attempt, and when to try again (None: finished)."""
    d = dict(data)
    count = int(d.get("attempt_count", 0)) + 1
    d["attempt_count"] = count
    attempts = [
        *d.get("attempts", []),
        {
            "at": outcome.at,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "duration_ms": round(outcome.duration_ms, 3),
            **({"manual": True} if one_shot else {}),
        },
    ]
    d["attempts"] = attempts[-MAX_LOGGED_ATTEMPTS:]
    d["first_attempt_at"] = d.get("first_attempt_at") or outcome.at
    d["window_start"] = d.get("window_start") or outcome.at
    d["last_status_code"] = outcome.status_code
    d["last_error"] = outcome.error
    d["updated_at"] = now
    if d.get("status") != PENDING:  # finished meanwhile (e.g. another attempt succeeded)
        return d, None
    if outcome.ok:
        d.update(status=SUCCEEDED, completed_at=now, next_attempt_at=None)
        return d, None
    if one_shot:
        return d, None  # the regular task keeps its own schedule
    retries_so_far = sum(1 for a in d["attempts"] if not a.get("manual"))
    give_up = not outcome.retryable
    if policy.max_attempts is not None and retries_so_far >= policy.max_attempts:
        give_up = True
    if now - float(d["window_start"]) >= policy.retry_for_s:
        give_up = True
    if give_up:
        d.update(status=FAILED, completed_at=now, next_attempt_at=None)
        return d, None
    when = now + policy.delay(retries_so_far, rng)
    d["next_attempt_at"] = when
    return d, when


async def retry_delivery(
    outbox: Outbox, id: str, *, clock: Callable[[], float] = time.time
) -> Record:
    """Manual retry: attempt the delivery again now (and, if it had finished,
    restart its retry window). Raises NotFound for an unknown delivery."""
    store = outbox.store

    async def attempt() -> Change[int]:
        rec = await store.get(DELIVERIES, id)
        if rec is None:
            raise NotFound(id)
        now = clock()
        data = dict(rec.data)
        was_pending = data.get("status") == PENDING
        n = int(data.get("manual_retries", 0)) + 1
        data.update(manual_retries=n, updated_at=now, next_attempt_at=now)
        if not was_pending:
            data.update(status=PENDING, completed_at=None, window_start=None)
        put = DELIVERY_RECORDS.put(id, data, expect_version=rec.version)
        return Change(n, [put])

    n = await outbox.compare_and_set(attempt, what=f"delivery {id}")
    rec = await store.get(DELIVERIES, id)
    if rec is None:
        raise NotFound(id)
    now = clock()
    queue = queue_for(rec.data["endpoint_id"])
    if not await store.enqueue(queue, id, {"delivery_id": id}, run_at=now):
        await store.enqueue(queue, f"{id}~m{n}", {"delivery_id": id, "one_shot": True}, run_at=now)
    new = await store.get(DELIVERIES, id)
    assert new is not None
    return new


@dataclass(slots=True)
class _EndpointSlot:
    id: str
    record: Record | None
    in_flight: int = 0
    next_check: float = 0.0
    gone_since: float | None = None
    finished: int = 0
    """Attempts finished so far: a finish during `run_once`'s awaits means look again."""


@dataclass(slots=True)
class WorkerConfig:
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 10.0
    max_in_flight: int = 64
    per_endpoint_concurrency: int = 8
    poll_interval_s: float = 0.5
    allow_private: bool = False
    """Deliver to non-public addresses too (ONAIR_WEBHOOK_ALLOW_PRIVATE)."""
    endpoint_refresh_s: float = 2.0
    slot_poll_s: float = 2.0
    """How often an idle endpoint's queue is re-checked without a poke (work
    enqueued by another node's dispatcher, manual retries made elsewhere)."""

    @property
    def lease_s(self) -> float:
        """An attempt never outlives its timeout, so a short lease suffices; a
        crashed node's in-flight deliveries are due again this soon."""
        return self.timeout_s + 5.0


class DeliveryWorker:
    """Schedules attempts across endpoints. Driven by `WebhookService`."""

    def __init__(
        self,
        store: Store,
        *,
        node_id: str,
        config: WorkerConfig,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.owner = f"{node_id}:webhooks"
        self.config = config
        self.clock = clock
        self.rng = rng or random.Random()
        self.session: aiohttp.ClientSession | None = None
        self.slots: dict[str, _EndpointSlot] = {}
        self.in_flight: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()
        self._next_refresh = 0.0
        self.attempts_made = 0

    # -- endpoint bookkeeping -------------------------------------------------------
    def set_endpoints(self, endpoints: list[Record]) -> None:
        now = self.clock()
        seen = set()
        for ep in endpoints:
            seen.add(ep.id)
            slot = self.slots.get(ep.id)
            if slot is None:
                self.slots[ep.id] = _EndpointSlot(ep.id, ep)
            else:
                slot.record, slot.gone_since = ep, None
        for slot in self.slots.values():
            if slot.id not in seen and slot.gone_since is None:
                slot.record, slot.gone_since, slot.next_check = None, now, 0.0
        self._next_refresh = now + self.config.endpoint_refresh_s

    def poke(self, endpoint_ids: set[str] | None = None) -> None:
        """New work may be due (for these endpoints, or all)."""
        for slot in self.slots.values():
            if endpoint_ids is None or slot.id in endpoint_ids:
                slot.next_check = 0.0
        if endpoint_ids and any(e not in self.slots for e in endpoint_ids):
            self._next_refresh = 0.0
        self.wake.set()

    # -- scheduling ---------------------------------------------------------------------
    async def run_once(self) -> float:
        """Lease and start what is due; returns seconds until something may be due."""
        from control.webhooks.dispatcher import all_endpoints

        now = self.clock()
        if now >= self._next_refresh:
            self.set_endpoints(await all_endpoints(self.store))
        sleep = self.config.poll_interval_s
        for slot in list(self.slots.values()):
            free = min(
                self.config.per_endpoint_concurrency - slot.in_flight,
                self.config.max_in_flight - len(self.in_flight),
            )
            if free <= 0:
                continue
            if slot.next_check > now:
                sleep = min(sleep, slot.next_check - now)
                continue
            if slot.in_flight > 0 and free < self._lease_batch:
                continue  # lease in batches: a finishing attempt wakes us again
            queue = queue_for(slot.id)
            finished = slot.finished
            tasks: Sequence[Task] = await self.store.lease(
                queue, self.owner, self.config.lease_s, limit=free
            )
            records = await self.store.get_many(
                DELIVERIES, [str(t.payload.get("delivery_id", t.id)) for t in tasks]
            )
            for task, rec in zip(tasks, records, strict=True):
                slot.in_flight += 1
                t = asyncio.create_task(self._run(slot, task, rec))
                self.in_flight.add(t)
            if len(tasks) < free:
                due = await self.store.next_due(queue)
                if slot.finished != finished:
                    # An attempt finished (and maybe queued its retry) while we
                    # asked: the answer may predate the retry, so look again now
                    # rather than after slot_poll_s.
                    slot.next_check = now
                    sleep = 0.0
                    continue
                if due is None:
                    if slot.gone_since is not None:
                        if slot.in_flight == 0:
                            del self.slots[slot.id]
                        continue
                    slot.next_check = now + self.config.slot_poll_s
                else:
                    slot.next_check = min(max(due, now + 0.001), now + self.config.slot_poll_s)
                    sleep = min(sleep, max(0.0, slot.next_check - now))
        return max(0.0, sleep)

    @property
    def _lease_batch(self) -> int:
        return max(1, min(16, self.config.per_endpoint_concurrency // 4))

    async def _run(self, slot: _EndpointSlot, task: Task, rec: Record | None) -> None:
        try:
            await self.attempt(slot.record, task, rec)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook attempt crashed", extra={"task": task.id})
        finally:
            slot.in_flight -= 1
            slot.finished += 1
            current = asyncio.current_task()
            if current is not None:
                self.in_flight.discard(current)
            if slot.in_flight < self.config.per_endpoint_concurrency:
                slot.next_check = min(slot.next_check, self.clock())
            self.wake.set()

    # -- one attempt -----------------------------------------------------------------------
    async def attempt(self, endpoint: Record | None, task: Task, rec: Record | None = None) -> None:
        did = str(task.payload.get("delivery_id", task.id))
        one_shot = bool(task.payload.get("one_shot"))
        if rec is None:
            rec = await self.store.get(DELIVERIES, did)
        if rec is None or rec.data.get("status") != PENDING:
            await self.store.complete(task.queue, task.id, self.owner)
            return
        now = self.clock()
        if endpoint is None or not endpoint_enabled(endpoint):
            outcome = Outcome(
                None, "endpoint_deleted" if endpoint is None else "endpoint_disabled", 0.0, now
            )
            await self._finish(rec, task, outcome, one_shot, force_fail=True)
            return
        secrets_ = endpoint_secrets(endpoint, now)
        if not secrets_ or self.session is None:
            await self._finish(
                rec, task, Outcome(None, "no_secret", 0.0, now), one_shot, force_fail=True
            )
            return
        payload = rec.data["payload"]
        body = _body_bytes(payload)
        headers = webhook_headers(secrets_, str(payload["id"]), body, timestamp=int(now))
        headers["content-type"] = "application/json"
        headers["user-agent"] = USER_AGENT
        url = str(endpoint.data["url"])
        outcome = await post_once(
            self.session,
            url,
            body,
            headers,
            self.config.timeout_s,
            self.clock,
            allow_private=self.config.allow_private,
        )
        self.attempts_made += 1
        await self._finish(rec, task, outcome, one_shot)

    async def _finish(
        self, rec: Record, task: Task, outcome: Outcome, one_shot: bool, *, force_fail: bool = False
    ) -> None:
        when: float | None = None
        for _ in range(10):
            now = self.clock()
            data, when = apply_outcome(
                rec.data, outcome, self.config.policy, now, one_shot=one_shot, rng=self.rng
            )
            if force_fail and data.get("status") == PENDING:
                data.update(status=FAILED, completed_at=now, next_attempt_at=None)
                when = None
            put = DELIVERY_RECORDS.put(rec.id, data, expect_version=rec.version)
            try:
                # the attempt log and the task's fate in one transaction
                await self.store.settle(task.queue, task.id, self.owner, [put], run_at=when)
                return
            except Conflict:
                fresh = await self.store.get(DELIVERIES, rec.id)
                if fresh is None:
                    break
                rec = fresh
        await self.store.complete(task.queue, task.id, self.owner)

    async def drain(self, timeout_s: float) -> None:
        """Wait for in-flight attempts (up to timeout_s), then cancel the rest
        (their leases expire and they are retried later)."""
        if self.in_flight:
            _done, pending = await asyncio.wait(set(self.in_flight), timeout=timeout_s)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
