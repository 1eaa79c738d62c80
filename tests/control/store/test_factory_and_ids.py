"""`open_store` picks the backend; `control.ids` makes unguessable ids and secrets."""

from __future__ import annotations

import re
from pathlib import Path

from control.ids import new_id, new_secret
from control.store import SQLITE_FILENAME, open_store
from control.store.redis import RedisStore
from control.store.sqlite import SqliteStore


async def test_open_store_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    store = await open_store(None, tmp_path / "data")
    try:
        assert isinstance(store, SqliteStore)
        assert await store.ping()
        assert (tmp_path / "data" / SQLITE_FILENAME).exists()
    finally:
        await store.close()
    unopened = open_store(None, tmp_path / "data")
    assert not await unopened.ping()
    await unopened.open()
    assert await unopened.ping()
    await unopened.close()


async def test_open_store_uses_redis_when_configured(redis_url: str, tmp_path: Path) -> None:
    store = await open_store(redis_url, tmp_path)
    try:
        assert isinstance(store, RedisStore) and await store.ping()
    finally:
        await store.close()


def test_ids_have_a_prefix_and_24_random_alphanumerics() -> None:
    ids = {new_id("ls") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"ls_[A-Za-z0-9]{24}", i) for i in ids)
    assert re.fullmatch(r"ev_[A-Za-z0-9]{24}", new_id("ev_"))


def test_secrets_are_url_safe() -> None:
    s = new_secret("sk", 32)
    assert re.fullmatch(r"sk_[A-Za-z0-9_-]{43}", s)
    assert new_secret("sk") != new_secret("sk")
