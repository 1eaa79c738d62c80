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


def test_sentinel_settings_pick_redis_through_sentinel(tmp_path: Path) -> None:
    from control.settings import load_settings
    from control.store import store_for
    from control.store.redis import RedisStore

    settings = load_settings(
        {
            "ONAIR_REDIS_SENTINELS": "127.0.0.1:26379, [::1]:26380,bad",
            "ONAIR_REDIS_SENTINEL_MASTER": "media",
        },
        data_dir=str(tmp_path),
    )
    assert settings.shared_store
    store = store_for(settings)
    assert isinstance(store, RedisStore)
    assert store.sentinels == (("127.0.0.1", 26379), ("::1", 26380))
    assert store.master == "media" and store.replicas_acked == 1
    plain = store_for(load_settings({}, redis_url="redis://127.0.0.1:1/0", data_dir="."))
    assert isinstance(plain, RedisStore) and plain.replicas_acked == 0
