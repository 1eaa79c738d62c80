"""Token-bucket rate limits per API key with IETF RateLimit headers."""

from __future__ import annotations

import asyncio
import re

from tests.control.api.conftest import MakeApi

POLICY_RE = re.compile(r'^"default";q=(\d+);w=(\d+)$')
STATE_RE = re.compile(r'^"default";r=(\d+);t=(\d+)$')


async def test_every_api_response_has_the_headers(make_api: MakeApi) -> None:
    api = await make_api(rate_limit_per_s=10, rate_limit_burst=20)
    for method, path in [
        ("GET", "/v1/live-streams"),
        ("GET", "/v1/nope/x"),
        ("POST", "/v1/live-streams"),
    ]:
        _, _, h = await api.call(method, path, json={} if method == "POST" else None)
        if path == "/v1/nope/x":
            continue  # unmatched routes are not rate limited
        assert POLICY_RE.match(h["RateLimit-Policy"]).groups() == ("20", "2")  # type: ignore[union-attr]
        assert STATE_RE.match(h["RateLimit"])
    async with api.client.get("/v1/live-streams") as r:  # 401 carries them too (per address)
        assert r.status == 401 and "RateLimit" in r.headers


async def test_over_the_limit_is_429_with_retry_after_then_recovers(make_api: MakeApi) -> None:
    api = await make_api(rate_limit_per_s=4, rate_limit_burst=3)
    remaining = []
    for _ in range(3):
        status, _, h = await api.call("GET", "/v1/live-streams")
        assert status == 200
        remaining.append(int(STATE_RE.match(h["RateLimit"]).group(1)))  # type: ignore[union-attr]
    assert remaining == [2, 1, 0]
    status, body, h = await api.call("GET", "/v1/live-streams")
    assert status == 429
    assert body["error"]["type"] == "rate_limited"
    assert int(h["Retry-After"]) >= 1
    assert STATE_RE.match(h["RateLimit"]).group(1) == "0"  # type: ignore[union-attr]
    await asyncio.sleep(0.3)  # 4 tokens/s → one token back after 0.25 s
    status, _, _ = await api.call("GET", "/v1/live-streams")
    assert status == 200


async def test_buckets_are_per_api_key(make_api: MakeApi) -> None:
    api = await make_api(rate_limit_per_s=1, rate_limit_burst=2)
    other = await api.new_key("read")
    for _ in range(2):
        assert (await api.call("GET", "/v1/live-streams"))[0] == 200
    assert (await api.call("GET", "/v1/live-streams"))[0] == 429
    assert (await api.call("GET", "/v1/live-streams", key=other))[0] == 200


async def test_the_limit_is_shared_by_nodes_on_one_store(make_api: MakeApi) -> None:
    a = await make_api(rate_limit_per_s=1, rate_limit_burst=2)
    b = await make_api(store=a.store, rate_limit_per_s=1, rate_limit_burst=2)
    assert (await a.call("GET", "/v1/live-streams"))[0] == 200
    assert (await b.call("GET", "/v1/live-streams", key=a.admin_key))[0] == 200
    assert (await a.call("GET", "/v1/live-streams"))[0] == 429
    assert (await b.call("GET", "/v1/live-streams", key=a.admin_key))[0] == 429
