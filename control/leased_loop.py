"""Periodic work that one node of the cluster does at a time.

`LeasedLoop(store, lease, owner, every_s, work)` runs `work()` every `every_s`
while this node holds the named store lease (taken or renewed before each
round, for three rounds' worth, so a node that dies hands it over within that).
A failing round is logged and the loop goes on; `stop()` cancels it and gives
the lease back. The retention sweeper and the reconciler are such loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from control.store.base import Store

log = logging.getLogger(__name__)


class LeasedLoop:
    def __init__(
        self,
        store: Store,
        lease: str,
        owner: str,
        every_s: float,
        work: Callable[[], Awaitable[object]],
        *,
        first: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.owner = owner
        self.every_s = every_s
        self.work = work
        self.first = first
        """Run on every node before its first leased round until it returns True
        (one-time upgrades that guard themselves with their own lease)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.lease)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.store.release_lease(self.lease, self.owner)

    async def _run(self) -> None:
        done_first = self.first is None
        while True:
            try:
                if not done_first and self.first is not None:
                    done_first = await self.first()
                if await self.store.acquire_lease(self.lease, self.owner, self.every_s * 3):
                    await self.work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s round failed", self.lease)
            await asyncio.sleep(self.every_s)
