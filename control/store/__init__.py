"""The durable state layer: the Store protocol, its two backends, the factory.

`open_store(redis_url, data_dir, sentinels=...)` picks Redis when a URL or
Sentinels are configured and SQLite (``<data_dir>/onair.db``) otherwise;
`store_for(settings)` reads them from the settings. It returns the store unopened;
both backends are awaitable, so either style works::

    store = open_store(url, data_dir); await store.open()
    store = await open_store(url, data_dir)      # opens it

`open()` is idempotent; `await store.close()` on shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from control.settings import Settings

SQLITE_FILENAME = "onair.db"


def open_store(
    redis_url: str | None,
    data_dir: Path,
    *,
    sentinels: Sequence[tuple[str, int]] = (),
    sentinel_master: str = "mymaster",
    replicas_acked: int | None = None,
) -> Store:
    """The configured Store (await it, or call `open()`, before use): Redis
    through Sentinel, or at a URL; else SQLite in `data_dir`."""
    if sentinels or redis_url:
        from control.store.redis import RedisStore

        acked = replicas_acked if replicas_acked is not None else (1 if sentinels else 0)
        return RedisStore(
            redis_url, sentinels=sentinels, master=sentinel_master, replicas_acked=acked
        )
    from control.store.sqlite import SqliteStore

    return SqliteStore(Path(data_dir) / SQLITE_FILENAME)


async def prepare_data_dir(settings: Settings) -> None:
    """Create the local data directory (SQLite's file and the blobs live there)
    unless the store is Redis."""
    if not settings.shared_store:
        await asyncio.to_thread(settings.data_path.mkdir, parents=True, exist_ok=True)


def store_for(settings: Settings) -> Store:
    """The store `settings` name (unopened)."""
    return open_store(
        settings.redis_url,
        settings.data_path,
        sentinels=settings.sentinel_addresses,
        sentinel_master=settings.redis_sentinel_master,
        replicas_acked=settings.redis_replicas_acked,
    )


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
    "prepare_data_dir",
    "store_for",
]
