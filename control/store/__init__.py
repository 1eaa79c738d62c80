"""The durable state layer: the Store protocol, its two backends, the factory.

`open_store(redis_url, data_dir)` picks Redis when a URL is configured and
SQLite (``<data_dir>/onair.db``) otherwise. It returns the store unopened;
both backends are awaitable, so either style works::

    store = open_store(url, data_dir); await store.open()
    store = await open_store(url, data_dir)      # opens it

`open()` is idempotent; `await store.close()` on shutdown.
"""

from __future__ import annotations

from pathlib import Path

from control.store.base import (
    Conflict,
    Delete,
    Event,
    EventDraft,
    NotFound,
    Op,
    Page,
    Put,
    Record,
    Store,
    StoreError,
    Task,
    TokenBucketResult,
)

SQLITE_FILENAME = "onair.db"


def open_store(redis_url: str | None, data_dir: Path) -> Store:
    """The configured Store (await it, or call `open()`, before use)."""
    if redis_url:
        from control.store.redis import RedisStore

        return RedisStore(redis_url)
    from control.store.sqlite import SqliteStore

    return SqliteStore(Path(data_dir) / SQLITE_FILENAME)


__all__ = [
    "SQLITE_FILENAME",
    "Conflict",
    "Delete",
    "Event",
    "EventDraft",
    "NotFound",
    "Op",
    "Page",
    "Put",
    "Record",
    "Store",
    "StoreError",
    "Task",
    "TokenBucketResult",
    "open_store",
]
