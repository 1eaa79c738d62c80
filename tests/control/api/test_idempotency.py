"""Idempotency-Key with Stripe semantics, held in the store (works across nodes)."""

from __future__ import annotations

import asyncio
import sys
import types

from aiohttp import web

from control.http.middleware import requires
from tests.control.api.conftest import Api, MakeApi


def slow_module(gate: asyncio.Event, entered: asyncio.Event, calls: list[int]) -> types.ModuleType:
    """A test-only resource whose POST waits for `gate` (a request in flight)."""
    mod = types.ModuleType("slow_resource")

    @requires("write")
    async def slow(request: web.Request) -> web.Response:
        calls.append(1)
        entered.set()
        await gate.wait()
        return web.json_response({"n": len(calls)}, status=201)

    def add_routes(app: web.Application) -> None:
        app.router.add_post("/v1/test-slow", slow)

    mod.add_routes = add_routes  # type: ignore[attr-defined]
    mod.OPENAPI = {}  # type: ignore[attr-defined]
    sys.modules.setdefault("slow_resource", mod)
    return mod


async def _count_events(api: Api) -> int:
    _, body, _ = await api.call("GET", "/v1/events?limit=100")
    return len(body["data"])


async def test_a_repeat_replays_the_first_result(api: Api) -> None:
    h = {"Idempotency-Key": "create-1"}
    s1, first, h1 = await api.call("POST", "/v1/live-streams", json={"name": "a"}, **h)
    s2, second, h2 = await api.call("POST", "/v1/live-streams", json={"name": "a"}, **h)
    assert s1 == s2 == 201
    assert first == second
    assert "Idempotent-Replayed" not in h1
    assert h2["Idempotent-Replayed"] == "true"
    assert h2["Location"] == h1["Location"]
    _, page, _ = await api.call("GET", "/v1/live-streams")
    assert len(page["data"]) == 1
    assert await _count_events(api) == 1


async def test_errors_are_replayed_too(api: Api) -> None:
    h = {"Idempotency-Key": "bad-1"}
    s1, b1, _ = await api.call("POST", "/v1/live-streams", json={"record": 3}, **h)
    s2, b2, h2 = await api.call("POST", "/v1/live-streams", json={"record": 3}, **h)
    assert s1 == s2 == 422 and b1 == b2
    assert h2["Idempotent-Replayed"] == "true"


async def test_same_key_different_body_is_422(api: Api) -> None:
    h = {"Idempotency-Key": "k-2"}
    assert (await api.call("POST", "/v1/live-streams", json={"name": "a"}, **h))[0] == 201
    status, body, _ = await api.call("POST", "/v1/live-streams", json={"name": "b"}, **h)
    assert status == 422
    assert body["error"]["type"] == "idempotency_error"
    # a different path with the same key is a different request as well
    status, body, _ = await api.call("POST", "/v1/signing-keys", **h)
    assert status == 422 and body["error"]["type"] == "idempotency_error"


async def test_keys_are_scoped_per_api_key(api: Api) -> None:
    other = await api.new_key("write")
    h = {"Idempotency-Key": "shared"}
    _, a, _ = await api.call("POST", "/v1/live-streams", json={}, **h)
    _, b, hb = await api.call("POST", "/v1/live-streams", key=other, json={}, **h)
    assert a["id"] != b["id"]
    assert "Idempotent-Replayed" not in hb


async def test_a_repeat_while_the_first_runs_is_409(make_api: MakeApi) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()
    calls: list[int] = []
    api = await make_api(extra_modules=[slow_module(gate, entered, calls)])
    h = {"Idempotency-Key": "slow-1"}
    first = asyncio.create_task(api.call("POST", "/v1/test-slow", json={"x": 1}, **h))
    await asyncio.wait_for(entered.wait(), 5)
    status, body, _ = await api.call("POST", "/v1/test-slow", json={"x": 1}, **h)
    assert status == 409
    assert body["error"]["type"] == "idempotency_key_in_use"
    gate.set()
    s1, b1, _ = await first
    assert s1 == 201
    s3, b3, h3 = await api.call("POST", "/v1/test-slow", json={"x": 1}, **h)
    assert (s3, b3) == (201, b1) and h3["Idempotent-Replayed"] == "true"
    assert len(calls) == 1


async def test_concurrent_repeats_run_once(api: Api) -> None:
    h = {"Idempotency-Key": "burst"}
    results = await asyncio.gather(
        *(api.call("POST", "/v1/live-streams", json={"name": "x"}, **h) for _ in range(8))
    )
    statuses = sorted(r[0] for r in results)
    assert set(statuses) <= {201, 409} and 201 in statuses
    ids = {r[1]["id"] for r in results if r[0] == 201}
    assert len(ids) == 1
    _, page, _ = await api.call("GET", "/v1/live-streams")
    assert len(page["data"]) == 1


async def test_replay_works_across_nodes_sharing_the_store(make_api: MakeApi) -> None:
    node_a = await make_api()
    node_b = await make_api(store=node_a.store)
    h = {"Idempotency-Key": "cross-node"}
    _, a, _ = await node_a.call("POST", "/v1/live-streams", json={}, **h)
    _, b, hb = await node_b.call("POST", "/v1/live-streams", key=node_a.admin_key, json={}, **h)
    assert a == b and hb["Idempotent-Replayed"] == "true"


async def test_overlong_or_empty_key_is_400(api: Api) -> None:
    status, body, _ = await api.call(
        "POST", "/v1/live-streams", json={}, **{"Idempotency-Key": "k" * 256}
    )
    assert status == 400 and body["error"]["param"] == "Idempotency-Key"
    status, _, _ = await api.call(
        "POST", "/v1/live-streams", json={}, **{"Idempotency-Key": "k" * 255}
    )
    assert status == 201


async def test_get_ignores_the_header(api: Api) -> None:
    s, _, headers = await api.call("GET", "/v1/live-streams", **{"Idempotency-Key": "g"})
    assert s == 200 and "Idempotent-Replayed" not in headers


async def _everything_stored(api: Api, tmp_path: object) -> bytes:
    """Every byte the store holds: the SQLite files (database, WAL), or every
    value under the Redis store's prefix."""
    from pathlib import Path

    from control.store.redis import RedisStore

    store = api.store
    if isinstance(store, RedisStore):
        r = store._r
        out = []
        async for key in r.scan_iter(match=store.prefix + "*"):
            kind = await r.type(key)
            if kind == "string":
                out.append(str(await r.get(key)))
            elif kind == "hash":
                out.append(repr(await r.hgetall(key)))
            elif kind == "stream":
                out.append(repr(await r.xrange(key)))
            elif kind == "zset":
                out.append(repr(await r.zrange(key, 0, -1)))
            else:
                out.append(repr(await r.dump(key)))
        return "\n".join(out).encode()

    def read_all() -> bytes:
        files = Path(str(tmp_path)).rglob("*")
        return b"".join(p.read_bytes() for p in files if p.is_file())

    return await asyncio.to_thread(read_all)


async def _idempotency_values(api: Api) -> str:
    from control.store.redis import RedisStore

    store = api.store
    if isinstance(store, RedisStore):
        keys = [k async for k in store._r.scan_iter(match=store.prefix + "kv:idem:*")]
        return "\n".join([str(await store._r.get(k)) for k in keys])
    from control.store.sqlite import SqliteStore

    assert isinstance(store, SqliteStore)
    rows = await store._run(
        lambda: store._db.execute("SELECT value FROM kv WHERE key LIKE 'idem:%'").fetchall()
    )
    return "\n".join(r[0] for r in rows)


async def test_replayed_secrets_are_never_stored_in_plaintext(api: Api, tmp_path: object) -> None:
    posts = [
        ("/v1/api-keys", {"scope": "read", "name": "k"}, "key"),
        ("/v1/signing-keys", {}, "private_key"),
        ("/v1/webhook-endpoints", {"url": "https://hooks.example.test/h"}, "secret"),
        ("/v1/live-streams", {}, "stream_key"),
    ]
    secrets: dict[str, str] = {}
    for path, body, field in posts:
        h = {"Idempotency-Key": f"idem-{field}"}
        status, first, _ = await api.call("POST", path, json=body, **h)
        assert status == 201, first
        status, again, headers = await api.call("POST", path, json=body, **h)
        assert headers["Idempotent-Replayed"] == "true"
        assert again[field] == first[field], "a client that lost the answer gets it again"
        secrets[field] = first[field]
    _, ep, _ = await api.call("GET", "/v1/webhook-endpoints")
    endpoint_id = ep["data"][0]["id"]
    h = {"Idempotency-Key": "idem-rotate"}
    _, rotated, _ = await api.call(
        "POST", f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", **h
    )
    _, again, _ = await api.call("POST", f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", **h)
    assert again["secret"] == rotated["secret"]
    secrets["rotated"] = rotated["secret"]

    cached = await _idempotency_values(api)
    assert cached.count('"sealed"') == 5
    for name, value in secrets.items():
        assert value not in cached, f"the idempotency cache holds the {name} in plaintext"
    # API keys and signing keys are kept only as a hash / a public key: nowhere at all
    everything = await _everything_stored(api, tmp_path)
    assert secrets["key"].encode() not in everything
    pem_body = secrets["private_key"].splitlines()[5]
    assert len(pem_body) > 40 and pem_body.encode() not in everything


async def test_a_sealed_answer_opens_only_with_its_idempotency_key() -> None:
    import pytest
    from cryptography.exceptions import InvalidTag

    from control.http.idempotency import seal, unseal

    sealed = seal("key_1", "idem-a", '{"secret": "x"}')
    assert unseal("key_1", "idem-a", sealed) == '{"secret": "x"}'
    with pytest.raises(InvalidTag):
        unseal("key_1", "idem-b", sealed)
    with pytest.raises(InvalidTag):
        unseal("key_2", "idem-a", sealed)
