"""Two nodes on one Redis, each with its own connections: what one commits the
other acts on at once through the event bus — its SSE streams send the event,
its API key cache forgets a revoked key — though it polls only every 10 s and
trusts a validated key for a minute."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from control.store.redis import RedisStore
from tests.control.api.conftest import MakeApi
from tests.control.api.test_events import _read_sse

pytestmark = pytest.mark.parametrize("store_kind", [pytest.param("redis", marks=pytest.mark.redis)])

SLOW = {"event_poll_s": 10.0, "sse_heartbeat_s": 30.0, "api_key_cache_s": 60.0}


async def test_sse_on_another_node_sends_an_event_at_once(
    make_api: MakeApi, redis_url: str
) -> None:
    a = await make_api(**SLOW)
    assert isinstance(a.store, RedisStore)
    other = RedisStore(redis_url, prefix=a.store.prefix)
    await other.open()
    try:
        b = await make_api(store=other, **SLOW)
        async with b.client.get("/v1/events/stream", headers=b.auth(a.admin_key)) as resp:
            assert resp.status == 200
            await asyncio.sleep(0.2)  # the stream is past its first read
            for _ in range(3):
                t0 = time.monotonic()
                _, ls, _ = await a.call("POST", "/v1/live-streams", json={})
                (ev,) = await _read_sse(resp, 1)
                assert time.monotonic() - t0 < 0.25  # the bus, not the 10 s poll
                assert json.loads(ev["data"])["data"]["id"] == ls["id"]
    finally:
        await other.close()


async def test_a_key_revoked_on_one_node_is_refused_by_the_other_at_once(
    make_api: MakeApi, redis_url: str
) -> None:
    a = await make_api(**SLOW)
    assert isinstance(a.store, RedisStore)
    other = RedisStore(redis_url, prefix=a.store.prefix)
    await other.open()
    try:
        b = await make_api(store=other, **SLOW)
        _, created, _ = await a.call("POST", "/v1/api-keys", json={"scope": "read"})
        key = created["key"]
        status, _, _ = await b.call("GET", "/v1/live-streams", key=key)
        assert status == 200  # b now trusts it for a minute
        status, _, _ = await a.call("DELETE", f"/v1/api-keys/{created['id']}")
        assert status in (200, 204)
        deadline = time.monotonic() + 0.25
        while True:
            status, _, _ = await b.call("GET", "/v1/live-streams", key=key)
            if status == 401 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        assert status == 401
    finally:
        await other.close()
