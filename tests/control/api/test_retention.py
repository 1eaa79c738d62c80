"""Retention: events, webhook deliveries (with their attempts) and failed jobs
older than ONAIR_EVENT_RETENTION_S are swept by the node holding the lease,
idle rate-limit buckets go too, and a poller behind the trimmed log gets 410
cursor_expired instead of silently missing events."""

from __future__ import annotations

import time

from control.jobs import FAILED_JOBS
from control.outbox import Outbox
from control.retention import Retention
from control.store.base import EventDraft, Put
from control.webhooks.model import DELIVERIES
from tests.control.api.conftest import MakeApi

HOUR = 3600.0


async def test_sweep_trims_old_events_and_410s_cursors_behind_it(make_api: MakeApi) -> None:
    api = await make_api(event_retention_s=HOUR)
    for i in range(3):
        await api.call("POST", "/v1/live-streams", json={"name": f"s{i}"})
    _, log, _ = await api.call("GET", "/v1/events?limit=100")
    first, last = log["data"][0]["cursor"], log["data"][-1]["cursor"]
    later = Retention(
        api.store, api.node.outbox, api.settings, owner="t", clock=lambda: time.time() + 2 * HOUR
    )
    removed = await later.sweep_once()
    assert removed["events"] == len(log["data"])
    status, body, _ = await api.call("GET", f"/v1/events?after={first}")
    assert status == 410 and body["error"]["type"] == "cursor_expired"
    async with api.client.get(f"/v1/events/stream?after={first}", headers=api.auth()) as r:
        assert r.status == 410
    # the newest trimmed cursor is still a valid place to continue from
    status, body, _ = await api.call("GET", f"/v1/events?after={last}")
    assert status == 200 and body["data"] == []
    _, fresh, _ = await api.call("POST", "/v1/live-streams", json={})
    status, body, _ = await api.call("GET", f"/v1/events?after={last}")
    assert status == 200 and [e["resource_id"] for e in body["data"]] == [fresh["id"]]
    assert body["data"][0]["cursor"] > last
    # events younger than the retention stay
    now = Retention(api.store, api.node.outbox, api.settings, owner="t")
    assert (await now.sweep_once())["events"] == 0


async def test_sweep_removes_old_deliveries_failed_jobs_and_idle_buckets(
    make_api: MakeApi,
) -> None:
    api = await make_api(event_retention_s=HOUR, webhook_retry_for_s=HOUR)
    store = api.store
    await store.commit(
        [
            Put(
                DELIVERIES,
                "wd_1",
                {"endpoint_id": "we_1", "attempts": [{"n": 1}] * 50},
                tags={"endpoint_id": "we_1"},
            ),
            Put(FAILED_JOBS, "job_1", {"error": "x"}),
        ]
    )
    await store.take_token("ip:192.0.2.1", 1.0, 10)
    now = time.time()
    assert (await Retention(store, Outbox(store), api.settings, owner="t").sweep_once())[
        "webhook_deliveries"
    ] == 0
    later = Retention(store, Outbox(store), api.settings, owner="t", clock=lambda: now + 3 * HOUR)
    removed = await later.sweep_once()
    assert removed["webhook_deliveries"] == 1 and removed["failed_jobs"] == 1
    assert await store.get(DELIVERIES, "wd_1") is None
    assert (await store.list(DELIVERIES, where=("endpoint_id", "we_1"))).data == []
    assert await store.get(FAILED_JOBS, "job_1") is None


async def test_a_delivery_still_retrying_outlives_a_short_retention(make_api: MakeApi) -> None:
    api = await make_api(event_retention_s=HOUR, webhook_retry_for_s=24 * HOUR)
    await api.store.commit([Put(DELIVERIES, "wd_2", {"endpoint_id": "we_1"})])
    sweep = Retention(
        api.store, api.node.outbox, api.settings, owner="t", clock=lambda: time.time() + 2 * HOUR
    )
    assert (await sweep.sweep_once())["webhook_deliveries"] == 0
    assert await api.store.get(DELIVERIES, "wd_2") is not None


async def test_one_node_sweeps_at_a_time(make_api: MakeApi) -> None:
    a = await make_api(retention_sweep_s=0.05)
    b = await make_api(store=a.store, retention_sweep_s=0.05)
    await a.store.commit([], [EventDraft("t.x", "r", {})])
    ra, rb = a.node.retention, b.node.retention
    assert ra.owner != rb.owner
    holders = [await a.store.acquire_lease("retention", o, 1) for o in (ra.owner, rb.owner)]
    assert holders.count(True) == 1
