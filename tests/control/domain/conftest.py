"""The domain services alone: a SQLite store in a temp directory, an outbox, no
aiohttp app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from control.outbox import Outbox
from control.settings import Settings, load_settings
from control.store.base import Event, Store
from tests.support.stores import make_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = make_store("sqlite", tmp_path)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def outbox(store: Store) -> Outbox:
    return Outbox(store)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({}, data_dir=str(tmp_path / "data"), public_url="http://media.test")


async def events(store: Store, resource_id: str | None = None) -> list[Event]:
    found = await store.events_after(0, 1000)
    return [e for e in found if resource_id is None or e.resource_id == resource_id]
