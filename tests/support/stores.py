"""Test helpers for building Store backends (SQLite file or a namespaced Redis).

`TestClock` is wall time plus an adjustable offset (and can be frozen), so
queue leases and token buckets can be moved forward without sleeping, while
Redis-native expiry (kv TTL, named leases) still follows real time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from control.store.base import Store
from control.store.redis import RedisStore
from control.store.sqlite import SqliteStore


class TestClock:
    __test__ = False  # not a test class

    def __init__(self) -> None:
        self.offset = 0.0
        self.frozen: float | None = None

    def __call__(self) -> float:
        if self.frozen is not None:
            return self.frozen
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        if self.frozen is not None:
            self.frozen += seconds
        self.offset += seconds

    def freeze(self) -> float:
        self.frozen = self()
        return self.frozen

    def unfreeze(self) -> None:
        self.frozen = None


def make_store(
    kind: str,
    tmp_path: Path,
    redis_url: str | None = None,
    *,
    clock: TestClock | None = None,
    name: str = "store.db",
    prefix: str | None = None,
) -> Store:
    """An unopened store of `kind` ("sqlite" or "redis")."""
    now: Callable[[], float] = clock if clock is not None else time.time
    if kind == "sqlite":
        return SqliteStore(tmp_path / name, clock=now)
    if kind == "redis":
        assert redis_url is not None
        return RedisStore(redis_url, prefix=prefix or f"t{uuid.uuid4().hex[:12]}:", clock=now)
    raise ValueError(kind)
