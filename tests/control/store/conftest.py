"""Fixtures: every contract test runs once on SQLite and once on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from control.store.base import Store
from tests.support.stores import TestClock, make_store


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: TestClock
) -> AsyncIterator[Store]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    s = make_store(request.param, tmp_path, url, clock=clock)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
