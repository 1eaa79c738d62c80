"""The stream key is a publishing secret: write and admin keys see it, read
keys, the event log, SSE and webhook payloads never do, and what older versions
stored is scrubbed on upgrade (SQLite and Redis)."""

from __future__ import annotations

import asyncio
import json

from control.retention import SCRUBBED_KEY
from control.store.base import EventDraft, Put
from control.webhooks.model import DELIVERIES
from tests.control.api.conftest import Api, MakeApi


async def test_read_keys_never_see_the_stream_key(api: Api) -> None:
    read = await api.new_key("read", "dashboard")
    write = await api.new_key("write", "backend")
    status, ls, _ = await api.call("POST", "/v1/live-streams", key=write, json={})
    assert status == 201 and ls["stream_key"].startswith("sk_")
    _, as_read, _ = await api.call("GET", f"/v1/live-streams/{ls['id']}", key=read)
    assert "stream_key" not in as_read and as_read["id"] == ls["id"]
    _, page, _ = await api.call("GET", "/v1/live-streams", key=read)
    assert page["data"] and all("stream_key" not in s for s in page["data"])
    for key in (write, api.admin_key):
        _, seen, _ = await api.call("GET", f"/v1/live-streams/{ls['id']}", key=key)
        assert seen["stream_key"] == ls["stream_key"]
        _, page, _ = await api.call("GET", "/v1/live-streams", key=key)
        assert page["data"][0]["stream_key"] == ls["stream_key"]


async def test_no_event_carries_the_stream_key(api: Api) -> None:
    _, ls, _ = await api.call("POST", "/v1/live-streams", json={"name": "a"})
    keys = [ls["stream_key"]]
    _, reset, _ = await api.call("POST", f"/v1/live-streams/{ls['id']}/reset-stream-key")
    keys.append(reset["stream_key"])
    await api.call("PATCH", f"/v1/live-streams/{ls['id']}", json={"name": "b"})
    await api.call("POST", f"/v1/live-streams/{ls['id']}/disable")
    await api.call("DELETE", f"/v1/live-streams/{ls['id']}")
    _, log, _ = await api.call("GET", "/v1/events?limit=100")
    types = [e["type"] for e in log["data"]]
    assert "live_stream.created" in types and "live_stream.deleted" in types
    assert not any(k in json.dumps(log) for k in keys)
    assert all("stream_key" not in e["data"] for e in log["data"])
    # and the same events over SSE
    async with api.client.get("/v1/events/stream?after=0", headers=api.auth()) as r:
        seen = b""
        while b"live_stream.deleted" not in seen:
            seen += await asyncio.wait_for(r.content.readany(), 5)
    assert not any(k.encode() in seen for k in keys) and b'"stream_key"' not in seen


async def test_webhook_payloads_have_no_stream_key(make_api: MakeApi) -> None:
    from tests.support.webhook_receiver import WebhookReceiver

    api = await make_api(webhook_allow_private=True)
    async with WebhookReceiver() as rx:
        _, ep, _ = await api.call(
            "POST", "/v1/webhook-endpoints", json={"url": rx.url("/h"), "events": ["*"]}
        )
        rx.set("/h", secret=ep["secret"])
        _, ls, _ = await api.call("POST", "/v1/live-streams", json={})
        await api.call("POST", f"/v1/live-streams/{ls['id']}/reset-stream-key")
        await rx.wait_for(2, path="/h")
        bodies = [r.body for r in rx.received]
    assert all(r.verified for r in rx.received)
    assert all(ls["stream_key"].encode() not in b for b in bodies)
    assert all("stream_key" not in json.loads(b)["data"] for b in bodies)


async def test_upgrade_scrubs_stream_keys_from_stored_events_and_deliveries(
    make_api: MakeApi,
) -> None:
    api = await make_api()
    # what an older version wrote: the full view, secret included
    old_view = {"id": "ls_old", "status": "idle", "stream_key": "sk_leaked_secret", "name": "x"}
    await api.store.kv_delete(SCRUBBED_KEY)
    await api.store.commit([], [EventDraft("live_stream.created", "ls_old", old_view)])
    await api.store.commit(
        [
            Put(
                DELIVERIES,
                "wd_old",
                {"endpoint_id": "we_1", "status": "succeeded", "payload": {"data": old_view}},
                tags={"endpoint_id": "we_1"},
            )
        ]
    )
    # a node of the new version starts on that store
    upgraded = await make_api(store=api.store)
    events = await upgraded.store.events_after(0, 1000)
    old = [e for e in events if e.resource_id == "ls_old"]
    assert old and old[0].data == {"id": "ls_old", "status": "idle", "name": "x"}
    delivery = await upgraded.store.get(DELIVERIES, "wd_old")
    assert delivery is not None and "stream_key" not in delivery.data["payload"]["data"]
    assert delivery.data["payload"]["data"]["name"] == "x"
    tagged = await upgraded.store.list(DELIVERIES, where=("endpoint_id", "we_1"))
    assert [r.id for r in tagged.data] == ["wd_old"], "the delivery keeps its tag"
    assert await upgraded.store.kv_get(SCRUBBED_KEY)
