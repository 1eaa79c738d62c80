"""Webhook delivery end to end: store events → dispatcher → worker → a real receiver
that verifies every request with the independent `standardwebhooks` package."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from control.ids import new_id
from control.outbox import Outbox
from control.store.base import EventDraft, Put, Store
from control.store.sqlite import SqliteStore
from control.webhooks import (
    DELIVERIES,
    ENDPOINTS,
    FAILED,
    SUCCEEDED,
    RetryPolicy,
    WebhookService,
    delivery_id,
    new_webhook_secret,
    retry_delivery,
)
from control.webhooks.dispatcher import Dispatcher
from control.webhooks.model import queue_for
from tests.support.redis_server import free_port
from tests.support.stores import make_store
from tests.support.webhook_receiver import WebhookReceiver

MakeService = Callable[..., Awaitable[WebhookService]]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    s = make_store(request.param, tmp_path, url)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    s = SqliteStore(tmp_path / "hooks.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as rx:
        yield rx


@pytest.fixture
async def make_service() -> AsyncIterator[MakeService]:
    started: list[WebhookService] = []

    async def make(store: Store, **kw: Any) -> WebhookService:
        kw.setdefault("poll_interval_s", 0.2)
        kw.setdefault("timeout_s", 5.0)
        kw.setdefault("allow_private", True)  # the receivers listen on 127.0.0.1
        svc = WebhookService(
            store, outbox=Outbox(store), node_id=kw.pop("node_id", new_id("node")), **kw
        )
        await svc.start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        await svc.stop(timeout_s=1.0)


async def add_endpoint(
    store: Store,
    url: str,
    *,
    secret: str | None = None,
    events: list[str] | None = None,
    **extra: Any,
) -> tuple[str, str]:
    endpoint_id = new_id("we")
    secret = secret or new_webhook_secret()
    data = {"url": url, "events": events or [], "secret": secret, "status": "enabled", **extra}
    await store.commit([Put(ENDPOINTS, endpoint_id, data)])
    return endpoint_id, secret


async def emit(
    store: Store, type: str = "live_stream.created", resource: str = "ls_1", **data: Any
):
    (event,) = await store.commit([], [EventDraft(type, resource, data)])
    return event


async def wait_status(store: Store, did: str, status: str, within: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        rec = await store.get(DELIVERIES, did)
        if rec is not None and rec.data["status"] == status:
            return rec.data
        await asyncio.sleep(0.02)
    rec = await store.get(DELIVERIES, did)
    raise AssertionError(f"delivery {did} not {status}: {rec and rec.data}")


# -- the happy path ----------------------------------------------------------------------------


async def test_2xx_is_delivered_exactly_once_with_a_valid_signature(
    store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    url = receiver.url("/ok")
    endpoint_id, secret = await add_endpoint(store, url)
    receiver.set("/ok", secret=secret)
    svc = await make_service(store)
    e1 = await emit(store, "live_stream.created", "ls_1", name="one")
    e2 = await emit(store, "live_stream.active", "ls_1")
    svc.notify()
    await receiver.wait_for(2, path="/ok")
    await asyncio.sleep(0.5)
    got = receiver.at("/ok")
    assert len(got) == 2 and all(r.verified for r in got)
    bodies = {r.json["id"]: r for r in got}
    assert set(bodies) == {e1.id, e2.id}
    first = bodies[e1.id]
    assert first.headers["webhook-id"] == e1.id
    assert first.json["type"] == "live_stream.created"
    assert first.json["sequence"] == 1 and bodies[e2.id].json["sequence"] == 2
    assert first.json["data"] == {"name": "one"}
    assert first.json["created_at"].endswith("Z") and "T" in first.json["created_at"]
    assert first.headers["content-type"] == "application/json"

    data = await wait_status(store, delivery_id(e1.id, endpoint_id), SUCCEEDED)
    assert data["attempt_count"] == 1
    (attempt,) = data["attempts"]
    assert attempt["status_code"] == 200 and attempt["error"] is None
    assert attempt["duration_ms"] >= 0 and attempt["at"] > 0
    page = await store.list(DELIVERIES, where=("endpoint_id", endpoint_id))
    assert len(page.data) == 2
    assert await store.queue_depth(queue_for(endpoint_id)) == 0


async def test_endpoints_only_get_the_event_types_they_asked_for(
    sqlite_store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    store = sqlite_store
    await add_endpoint(store, receiver.url("/exact"), events=["asset.ready"])
    await add_endpoint(store, receiver.url("/prefix"), events=["live_stream.*"])
    await add_endpoint(store, receiver.url("/all"))
    await add_endpoint(store, receiver.url("/disabled"), status="disabled")
    svc = await make_service(store)
    for t in ("live_stream.created", "asset.ready", "room.started"):
        await emit(store, t)
    svc.notify()
    await receiver.wait_for(3, path="/all")
    await asyncio.sleep(0.4)
    assert [r.json["type"] for r in receiver.at("/exact")] == ["asset.ready"]
    assert [r.json["type"] for r in receiver.at("/prefix")] == ["live_stream.created"]
    assert receiver.at("/disabled") == []


async def test_events_before_an_endpoint_existed_are_not_sent_to_it(
    sqlite_store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    store = sqlite_store
    await emit(store, "old.event")
    await asyncio.sleep(0.01)
    await add_endpoint(store, receiver.url("/new"))
    await emit(store, "new.event")
    svc = await make_service(store)
    svc.notify()
    await receiver.wait_for(1, path="/new")
    await asyncio.sleep(0.3)
    assert [r.json["type"] for r in receiver.at("/new")] == ["new.event"]


# -- retries -----------------------------------------------------------------------------------


async def test_5xx_retries_follow_the_backoff_schedule_then_fail(
    store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    url = receiver.url("/fail", status=500)
    endpoint_id, secret = await add_endpoint(store, url)
    receiver.set("/fail", secret=secret)
    schedule = (0.2, 0.4, 0.8)
    policy = RetryPolicy(schedule=schedule, jitter=0.0, max_attempts=4)
    svc = await make_service(store, policy=policy)
    event = await emit(store)
    svc.notify()
    await receiver.wait_for(4, path="/fail", within=10)
    data = await wait_status(store, delivery_id(event.id, endpoint_id), FAILED)
    got = receiver.at("/fail")
    assert len(got) == 4 and all(r.verified for r in got)
    assert {r.headers["webhook-id"] for r in got} == {event.id}
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    for gap, expected in zip(gaps, schedule, strict=True):
        assert expected - 0.02 <= gap <= expected + 0.5, (gaps, schedule)
    assert data["attempt_count"] == 4
    assert [a["status_code"] for a in data["attempts"]] == [500] * 4
    await asyncio.sleep(1.0)
    assert len(receiver.at("/fail")) == 4, "no attempts after failing"
    assert await store.queue_depth(queue_for(endpoint_id)) == 0


async def test_full_jitter_keeps_each_delay_under_its_cap(
    sqlite_store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    store = sqlite_store
    endpoint_id, _ = await add_endpoint(store, receiver.url("/fail", status=503))
    policy = RetryPolicy(base_s=0.1, factor=2.0, max_s=0.3, jitter=1.0, max_attempts=5)
    svc = await make_service(store, policy=policy)
    event = await emit(store)
    svc.notify()
    await wait_status(store, delivery_id(event.id, endpoint_id), FAILED)
    got = receiver.at("/fail")
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    caps = [0.1, 0.2, 0.3, 0.3]
    assert len(gaps) == 4
    for gap, cap in zip(gaps, caps, strict=True):
        assert gap <= cap + 0.3, (gaps, caps)


async def test_retry_window_gives_up_after_retry_for_s(
    sqlite_store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    store = sqlite_store
    endpoint_id, _ = await add_endpoint(store, receiver.url("/down", status=502))
    policy = RetryPolicy(schedule=(0.1,), jitter=0.0, retry_for_s=0.5)
    svc = await make_service(store, policy=policy)
    event = await emit(store)
    svc.notify()
    data = await wait_status(store, delivery_id(event.id, endpoint_id), FAILED)
    assert data["attempts"][-1]["at"] - data["attempts"][0]["at"] >= 0.5
    assert 2 <= data["attempt_count"] <= 8


@pytest.mark.parametrize(
    ("status", "retried"), [(400, False), (410, False), (408, True), (429, True)]
)
async def test_4xx_fail_at_once_except_408_and_429(
    sqlite_store: Store,
    receiver: WebhookReceiver,
    make_service: MakeService,
    status: int,
    retried: bool,
) -> None:
    store = sqlite_store
    endpoint_id, _ = await add_endpoint(store, receiver.url("/x", status=status))
    policy = RetryPolicy(schedule=(0.1,), jitter=0.0, max_attempts=3)
    svc = await make_service(store, policy=policy)
    event = await emit(store)
    svc.notify()
    data = await wait_status(store, delivery_id(event.id, endpoint_id), FAILED)
    assert data["attempt_count"] == (3 if retried else 1)
    assert data["last_status_code"] == status


async def test_manual_retry_delivers_a_failed_delivery(
    sqlite_store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    store = sqlite_store
    endpoint_id, secret = await add_endpoint(store, receiver.url("/gone", status=404))
    receiver.set("/gone", secret=secret)
    svc = await make_service(store)
    event = await emit(store)
    svc.notify()
    did = delivery_id(event.id, endpoint_id)
    await wait_status(store, did, FAILED)
    receiver.set("/gone", status=200)
    rec = await svc.retry_delivery(did)
    assert rec.data["status"] == "pending" and rec.data["manual_retries"] == 1
    data = await wait_status(store, did, SUCCEEDED)
    assert [a["status_code"] for a in data["attempts"]] == [404, 200]
    assert all(r.verified for r in receiver.at("/gone"))


async def test_manual_retry_of_a_pending_delivery_attempts_now(
    sqlite_store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    store = sqlite_store
    endpoint_id, _ = await add_endpoint(store, receiver.url("/later", status=500))
    policy = RetryPolicy(schedule=(3600.0,), jitter=0.0)
    svc = await make_service(store, policy=policy)
    event = await emit(store)
    svc.notify()
    did = delivery_id(event.id, endpoint_id)
    await receiver.wait_for(1, path="/later")
    receiver.set("/later", status=204)
    await retry_delivery(Outbox(store), did)  # the plain function: picked up by polling
    data = await wait_status(store, did, SUCCEEDED)
    assert data["attempts"][-1].get("manual") is True
    await asyncio.sleep(0.3)
    assert await store.queue_depth(queue_for(endpoint_id)) == 1, "the hourly retry task remains…"
    assert len(receiver.at("/later")) == 2


async def test_manual_retry_of_unknown_delivery_raises(sqlite_store: Store) -> None:
    from control.store.base import NotFound

    with pytest.raises(NotFound):
        await retry_delivery(Outbox(sqlite_store), "wd_nope")


# -- isolation -------------------------------------------------------------------------------


async def test_dead_and_slow_endpoints_never_delay_a_healthy_one(
    sqlite_store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    store = sqlite_store
    dead_url = f"http://127.0.0.1:{free_port()}/dead"
    await add_endpoint(store, dead_url)
    slow_id, _ = await add_endpoint(store, receiver.url("/slow", delay_s=5.0))
    healthy_id, _ = await add_endpoint(store, receiver.url("/healthy"))
    policy = RetryPolicy(schedule=(0.05,), jitter=0.0)
    svc = await make_service(
        store, policy=policy, timeout_s=10.0, per_endpoint_concurrency=2, max_in_flight=16
    )
    t0 = time.time()
    for i in range(20):
        await emit(store, "asset.progress", "as_1", i=i)
    svc.notify()
    await receiver.wait_for(20, path="/healthy", within=4.5)
    healthy = receiver.at("/healthy")
    assert max(r.at for r in healthy) - t0 < 3.0, "healthy endpoint was delayed"
    assert receiver.max_in_flight["/slow"] <= 2
    assert len(receiver.at("/slow")) <= 2
    assert await store.queue_depth(queue_for(slow_id)) == 20
    assert await store.queue_depth(queue_for(healthy_id)) == 0


# -- rotation -------------------------------------------------------------------------------


async def test_rotation_signs_with_both_secrets_until_the_old_one_expires(
    sqlite_store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    store = sqlite_store
    old, new = new_webhook_secret(), new_webhook_secret()
    await add_endpoint(
        store,
        receiver.url("/old", secret=old),
        secret=new,
        previous_secret=old,
        previous_secret_expires_at=time.time() + 3600,
    )
    await add_endpoint(
        store,
        receiver.url("/expired", secret=old),
        secret=new,
        previous_secret=old,
        previous_secret_expires_at="2020-01-01T00:00:00Z",
    )
    await add_endpoint(store, receiver.url("/new", secret=new), secret=new, previous_secret=old)
    svc = await make_service(store)
    await emit(store)
    svc.notify()
    await receiver.wait_for(1, path="/old")
    await receiver.wait_for(1, path="/expired")
    await receiver.wait_for(1, path="/new")
    assert receiver.at("/old")[0].verified, "a receiver still on the old secret verifies"
    assert receiver.at("/new")[0].verified
    assert not receiver.at("/expired")[0].verified
    assert len(receiver.at("/old")[0].headers["webhook-signature"].split(" ")) == 2


# -- durability ------------------------------------------------------------------------------


async def test_a_new_service_on_the_same_file_delivers_exactly_once(
    tmp_path: Path, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    path = tmp_path / "restart.db"
    first = SqliteStore(path)
    await first.open()
    endpoint_id, secret = await add_endpoint(first, receiver.url("/r"))
    receiver.set("/r", secret=secret)
    events = [await emit(first, "live_stream.idle", f"ls_{i}") for i in range(6)]
    # "crash" 1: deliveries created and queued, the cursor not advanced
    crashed = Dispatcher(first)
    cursor, _version = await crashed.cursor()
    batch = await first.events_after(cursor, limit=2)
    from control.webhooks.dispatcher import all_endpoints

    eps = await all_endpoints(first)
    planned = [(ev, ep, delivery_id(ev.id, ep.id)) for ev in batch for ep in eps]
    created = await crashed._create_deliveries(planned, time.time())
    for ep_id, did in created:
        await first.enqueue(queue_for(ep_id), did, {"delivery_id": did})
    # "crash" 2: the next delivery record exists but its task was never enqueued
    more = await first.events_after(batch[-1].cursor, limit=1)
    await crashed._create_deliveries(
        [(more[0], eps[0], delivery_id(more[0].id, endpoint_id))], time.time()
    )
    await first.close()

    second = SqliteStore(path)
    await second.open()
    try:
        svc = await make_service(second)
        svc.notify()
        await receiver.wait_for(6, path="/r")
        await asyncio.sleep(0.8)
        got = receiver.at("/r")
        assert sorted(r.json["id"] for r in got) == sorted(e.id for e in events)
        assert all(r.verified for r in got)
        await svc.stop()
        # and yet another restart sends nothing again
        svc2 = await make_service(second)
        svc2.notify()
        await asyncio.sleep(0.6)
        assert len(receiver.at("/r")) == 6
        for e in events:
            await wait_status(second, delivery_id(e.id, endpoint_id), SUCCEEDED)
    finally:
        await second.close()


async def test_stop_finishes_in_flight_attempts(
    sqlite_store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    store = sqlite_store
    endpoint_id, _ = await add_endpoint(store, receiver.url("/slowish", delay_s=0.5))
    svc = await make_service(store)
    event = await emit(store)
    svc.notify()
    await receiver.wait_for(1, path="/slowish")
    await svc.stop(timeout_s=5)
    rec = await store.get(DELIVERIES, delivery_id(event.id, endpoint_id))
    assert rec is not None and rec.data["status"] == SUCCEEDED
    assert await store.queue_depth(queue_for(endpoint_id)) == 0


async def test_first_attempt_latency_after_commit_is_small(
    store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    await add_endpoint(store, receiver.url("/fast"))
    svc = await make_service(store, poll_interval_s=1.0)
    latencies = []
    for i in range(15):
        t0 = time.time()
        await emit(store, "asset.progress", "as_1", i=i)
        svc.notify()
        await receiver.wait_for(i + 1, path="/fast")
        latencies.append(receiver.at("/fast")[-1].at - t0)
    assert statistics.median(latencies) < 0.1, latencies


async def test_two_nodes_on_one_store_deliver_each_event_once(
    store: Store, receiver: WebhookReceiver, make_service: MakeService
) -> None:
    await add_endpoint(store, receiver.url("/both"))
    await add_endpoint(store, receiver.url("/both2"))
    a = await make_service(store, node_id="node-a")
    b = await make_service(store, node_id="node-b")
    events = [await emit(store, "asset.progress", f"as_{i % 3}", i=i) for i in range(30)]
    a.notify()
    b.notify()
    await receiver.wait_for(30, path="/both")
    await receiver.wait_for(30, path="/both2")
    await asyncio.sleep(0.8)
    for path in ("/both", "/both2"):
        ids = [r.json["id"] for r in receiver.at(path)]
        assert sorted(ids) == sorted(e.id for e in events), path
    per_resource: dict[str, list[int]] = {}
    for e in events:
        per_resource.setdefault(e.resource_id, []).append(e.sequence)
    assert all(seqs == list(range(1, 11)) for seqs in per_resource.values())
