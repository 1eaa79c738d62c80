"""API keys without HTTP: stored hashed, found by their hash, scopes ranked,
revocation idempotent and effective."""

from __future__ import annotations

from control.domain.api_keys import (
    COLLECTION,
    ApiKeyCache,
    create_api_key,
    hash_key,
    revoke_api_key,
    scope_allows,
)
from control.outbox import Outbox
from control.store.base import Store


async def test_a_key_is_stored_only_as_its_hash_and_authenticates(store: Store) -> None:
    view, key = await create_api_key(store, "write", "ci")
    rec = await store.get(COLLECTION, view["id"])
    assert rec is not None and key not in str(rec.data) and rec.data["hash"] == hash_key(key)
    info = await ApiKeyCache(store, ttl_s=0).authenticate(key)
    assert info is not None and info.id == view["id"] and info.scope == "write"
    assert await ApiKeyCache(store, ttl_s=0).authenticate(key + "x") is None


def test_scopes_are_ranked() -> None:
    assert scope_allows("admin", "write") and scope_allows("write", "read")
    assert not scope_allows("read", "write") and not scope_allows("write", "admin")


async def test_revocation_is_idempotent_and_locks_the_key_out(store: Store, outbox: Outbox) -> None:
    view, key = await create_api_key(store, "admin", "ops")
    cache = ApiKeyCache(store, ttl_s=60)
    assert await cache.authenticate(key) is not None
    first = await revoke_api_key(outbox, view["id"])
    again = await revoke_api_key(outbox, view["id"])
    assert first is not None and first["status"] == "revoked" and again == first
    cache.invalidate(view["id"])  # what the API does on this node
    assert await cache.authenticate(key) is None
    assert await ApiKeyCache(store, ttl_s=0).authenticate(key) is None
    assert await revoke_api_key(outbox, "key_nope") is None
