"""API keys: 401 for a missing/invalid/revoked key, 403 for a valid key
without the scope (admin ⊃ write ⊃ read), keys managed over the API."""

from __future__ import annotations

import pytest

from control.domain.api_keys import COLLECTION, hash_key
from tests.control.api.conftest import Api

READ = [("GET", "/v1/live-streams"), ("GET", "/v1/events"), ("GET", "/v1/signing-keys")]
WRITE = [("POST", "/v1/live-streams")]
ADMIN = [("GET", "/v1/api-keys"), ("POST", "/v1/signing-keys"), ("GET", "/v1/webhook-endpoints")]


async def test_missing_key_is_401_with_a_bearer_challenge(api: Api) -> None:
    async with api.client.get("/v1/live-streams") as r:
        assert r.status == 401
        assert (await r.json())["error"]["type"] == "authentication_required"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["Bearer onair_sk_" + "x" * 43, "Bearer nope", "Basic dXNlcjpwYXNz", "Bearer "]
)
async def test_invalid_key_is_401(api: Api, header: str) -> None:
    async with api.client.get("/v1/live-streams", headers={"Authorization": header}) as r:
        assert r.status == 401
        assert (await r.json())["error"]["type"] in ("invalid_api_key", "authentication_required")


@pytest.mark.parametrize(
    ("scope", "allowed"),
    [("read", READ), ("write", READ + WRITE), ("admin", READ + WRITE + ADMIN)],
)
async def test_scopes_nest_and_missing_scope_is_403(
    api: Api, scope: str, allowed: list[tuple[str, str]]
) -> None:
    key = await api.new_key(scope)
    for method, path in READ + WRITE + ADMIN:
        status, body, _ = await api.call(
            method, path, key=key, json={} if method == "POST" else None
        )
        if (method, path) in allowed:
            assert status in (200, 201), (scope, method, path, body)
        else:
            assert status == 403, (scope, method, path)
            assert body["error"]["type"] == "permission_denied"


async def test_admin_manages_keys_over_the_api(api: Api) -> None:
    status, created, _ = await api.call(
        "POST", "/v1/api-keys", json={"scope": "write", "name": "encoder"}
    )
    assert status == 201
    key = created["key"]
    assert key.startswith("onair_sk_") and len(key) >= 40
    assert created["scope"] == "write" and created["status"] == "active"

    # stored hashed: the plaintext appears nowhere in the record
    rec = await api.store.get(COLLECTION, created["id"])
    assert rec is not None and key not in str(rec.data)
    assert rec.data["hash"] == hash_key(key)

    status, listed, _ = await api.call("GET", "/v1/api-keys")
    assert status == 200
    assert created["id"] in [k["id"] for k in listed["data"]]
    assert all("key" not in k and "hash" not in k for k in listed["data"])

    assert (await api.call("POST", "/v1/live-streams", key=key, json={}))[0] == 201
    status, one, _ = await api.call("GET", f"/v1/api-keys/{created['id']}")
    assert one["last_used_at"] is not None

    status, revoked, _ = await api.call("DELETE", f"/v1/api-keys/{created['id']}")
    assert status == 200 and revoked["status"] == "revoked"
    status, body, _ = await api.call("GET", "/v1/live-streams", key=key)
    assert status == 401 and body["error"]["type"] == "invalid_api_key"


async def test_unknown_scope_is_rejected(api: Api) -> None:
    status, body, _ = await api.call("POST", "/v1/api-keys", json={"scope": "root"})
    assert status == 422 and body["error"]["param"] == "scope"
