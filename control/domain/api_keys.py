"""API keys: creation, hashing, lookup, scopes, revocation, `last_used_at`.

Keys look like ``onair_sk_<43 url-safe chars>`` (256 random bits). Only the
SHA-256 of a key is stored (a unique index ``hash`` on collection
``api_keys``), so a key is shown exactly once. Scopes are ordered:
admin ⊃ write ⊃ read.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from control.domain.records import Collection
from control.ids import new_id
from control.outbox import Change, Outbox
from control.store.base import Conflict, Page, Record, Store

log = logging.getLogger(__name__)

API_KEY_RECORDS = Collection("api_keys", unique=lambda d: {"hash": str(d["hash"])})
"""Stored hashed: the unique index on the hash finds a presented key in one lookup."""
COLLECTION = API_KEY_RECORDS.name
KEY_PREFIX = "onair_sk_"
SCOPES = ("read", "write", "admin")
_RANK = {s: i for i, s in enumerate(SCOPES)}
LAST_USED_EVERY_S = 60.0


def scope_allows(held: str, needed: str) -> bool:
    """True when a key with scope `held` may do what needs `needed`."""
    return _RANK.get(held, -1) >= _RANK[needed]


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX) and 20 <= len(token) <= 200 and token.isascii()


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """The authenticated caller."""

    id: str
    scope: str
    name: str | None


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def key_to_json(record_id: str, created_at: float, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record_id,
        "object": "api_key",
        "name": data.get("name"),
        "scope": data["scope"],
        "prefix": data.get("prefix"),
        "status": data.get("status", "active"),
        "created_at": rfc3339(created_at),
        "last_used_at": rfc3339(data.get("last_used_at")),
        "revoked_at": rfc3339(data.get("revoked_at")),
    }


async def create_api_key(
    store: Store, scope: str, name: str | None = None
) -> tuple[dict[str, Any], str]:
    """Create a key; returns (its JSON without the secret, the plaintext key)."""
    if scope not in _RANK:
        raise ValueError(f"unknown scope {scope!r}")
    key = generate_key()
    digest = hash_key(key)
    key_id = new_id("key")
    data: dict[str, Any] = {
        "name": name,
        "scope": scope,
        "hash": digest,
        "prefix": key[: len(KEY_PREFIX) + 4],
        "status": "active",
        "last_used_at": None,
        "revoked_at": None,
    }
    await store.commit([API_KEY_RECORDS.put(key_id, data)])
    record = await store.get(COLLECTION, key_id)
    created = record.created_at if record else time.time()
    return key_to_json(key_id, created, data), key


async def list_api_keys(
    store: Store, *, limit: int = 25, starting_after: str | None = None
) -> Page:
    return await store.list(COLLECTION, limit=limit, starting_after=starting_after)


async def revoke_api_key(outbox: Outbox, key_id: str) -> dict[str, Any] | None:
    """Revoke (idempotent). None if no such key."""

    async def attempt() -> Change[dict[str, Any] | None]:
        record = await outbox.store.get(COLLECTION, key_id)
        if record is None:
            return Change(None)
        data = dict(record.data)
        if data.get("status") == "revoked":
            return Change(key_to_json(record.id, record.created_at, data))
        data["status"] = "revoked"
        data["revoked_at"] = time.time()
        put = API_KEY_RECORDS.put(key_id, data, expect_version=record.version)
        return Change(key_to_json(record.id, record.created_at, data), [put])

    return await outbox.compare_and_set(attempt, what=f"api key {key_id}")


async def has_active_admin_key(store: Store) -> bool:
    cursor: str | None = None
    while True:
        page = await store.list(COLLECTION, limit=100, starting_after=cursor)
        for rec in page.data:
            if rec.data.get("scope") == "admin" and rec.data.get("status") == "active":
                return True
        if not page.has_more or not page.data:
            return False
        cursor = page.data[-1].id


class ApiKeyCache:
    """Authenticates bearer tokens against the store.

    Valid keys are cached in-process for `ttl_s` (default 1 s) to save a store
    round trip per request; a revoke drops the entry at once on this node and,
    through the event bus, on the others (within `ttl_s` at worst).
    `last_used_at` is written at most once per key per LAST_USED_EVERY_S per
    node."""

    MAX_ENTRIES = 10_000

    def __init__(self, store: Store, ttl_s: float = 1.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[ApiKeyInfo, float]] = {}
        self._last_write: dict[str, float] = {}

    def clear(self) -> None:
        """Forget every validated key (a key was revoked on another node)."""
        self._cache.clear()

    def invalidate(self, key_id: str) -> None:
        for digest, (info, _) in list(self._cache.items()):
            if info.id == key_id:
                del self._cache[digest]

    async def authenticate(self, token: str) -> ApiKeyInfo | None:
        if not looks_like_key(token):
            return None
        digest = hash_key(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        record = await self.store.get_by(COLLECTION, "hash", digest)
        if record is None or not hmac.compare_digest(record.data.get("hash", ""), digest):
            self._cache.pop(digest, None)
            return None
        if record.data.get("status") != "active":
            self._cache.pop(digest, None)
            return None
        info = ApiKeyInfo(id=record.id, scope=record.data["scope"], name=record.data.get("name"))
        if self.ttl_s > 0:
            if len(self._cache) >= self.MAX_ENTRIES:
                self._cache.clear()
            self._cache[digest] = (info, now + self.ttl_s)
        await self._touch(record, digest)
        return info

    async def _touch(self, record: Record, digest: str) -> None:
        now = time.time()
        if now - self._last_write.get(record.id, 0.0) < LAST_USED_EVERY_S:
            return
        self._last_write[record.id] = now
        if now - (record.data.get("last_used_at") or 0.0) < LAST_USED_EVERY_S:
            return
        data = dict(record.data)
        data["last_used_at"] = now
        try:
            await self.store.commit(
                [API_KEY_RECORDS.put(record.id, data, expect_version=record.version)]
            )
        except Conflict:
            pass  # someone else changed it (maybe a revoke): theirs wins
