"""The node's rooms: the `RoomService` (the SFU of `realtime.rooms`) with its
join tokens keyed from the store when the node starts, and the `RoomKeeper`
that keeps this node's ``room:<id>`` leases and finishes rooms a dead node left
``active`` (reason ``node_lost``, recording adopted). Their stored state is
`control.domain.rooms`.

A room is hosted by one node (``room_host:<id>``, claimed by the first node a
participant reaches, renewed by its keeper); a participant whose signaling
socket reaches another node is relayed there (`Rooms.host_elsewhere`, the
HTTP route pipes the socket), and the API's participant calls are forwarded to
it, so any node serves any room. When the host is gone (its process died: its
address refuses connections, or its alive key lapsed), the node a participant
reaches next takes the room over (`take_over`: one node wins), so people who
reconnect get the room again on a living node; the dead host's recording is
finished from what it stored and the room records anew (the ``node_lost``
semantics of a room nobody rejoined are the keeper's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from control.domain.rooms import ROOMS_COLLECTION, StoreRooms, load_token_secret
from control.registry import alive, alive_key, node_url
from control.room_broadcasts import RoomBroadcasts
from control.store.base import Record, Store
from realtime.rooms.room import RoomFinished
from realtime.rooms.service import RoomService
from realtime.rooms.tokens import JoinTokens

log = logging.getLogger(__name__)


ROOM_LEASE_TTL_S = 8.0
ROOM_MOVE_GRACE_S = 30.0
"""How long a node that handed its rooms on keeps their leases, so that no node
finishes them while their participants reconnect through another node."""
ROOM_HEARTBEAT_S = 2.0


class RoomHostContended(Exception):
    """Nodes kept taking the room from each other while this one looked."""


def room_lease(room_id: str) -> str:
    return f"room:{room_id}"


def room_host_key(room_id: str) -> str:
    """The store key naming the node that hosts a room's sessions."""
    return f"room_host:{room_id}"


@dataclass(frozen=True, slots=True)
class RoomHost:
    """Another living node hosting a room, and where it is reached."""

    node_id: str
    url: str


class RoomKeeper:
    """Durability of rooms across nodes: the node hosting a room renews the named
    lease ``room:<id>``; rooms still ``active`` in the store that no node hosts
    (their node died: SIGKILL, crash) are finished here — the recording, if any,
    finalised into a ready asset (`RoomBroadcasts.adopt`) and ``room.finished``
    with reason ``node_lost``."""

    def __init__(
        self,
        store: Store,
        service: RoomService,
        rooms: StoreRooms,
        node_id: str,
        broadcasts: RoomBroadcasts | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.rooms = rooms
        self.node_id = node_id
        self.broadcasts = broadcasts
        self.adopting = True
        """False once this node drains: it takes no room over, not even its own
        rooms it handed on (their leases lapse while participants move)."""

    async def renew(self) -> None:
        for room_id in list(self.service.rooms):
            await self.store.acquire_lease(room_lease(room_id), self.node_id, ROOM_LEASE_TTL_S)
            await self.store.kv_set(room_host_key(room_id), self.node_id, ttl_s=ROOM_LEASE_TTL_S)

    async def sweep(self) -> None:
        if not self.adopting:
            return
        after: str | None = None
        while True:
            page = await self.store.list(
                ROOMS_COLLECTION, limit=100, starting_after=after, where=("status", "active")
            )
            for rec in page.data:
                await self._adopt(rec)
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    async def _adopt(self, rec: Record) -> None:
        if rec.id in self.service.rooms or rec.data.get("status") != "active":
            return
        host = await self.store.kv_get(room_host_key(rec.id))
        if host and host != self.node_id and await self.store.kv_get(alive_key(host)):
            return  # a living node hosts it (it may not have taken the lease yet)
        if not await self.store.acquire_lease(room_lease(rec.id), self.node_id, ROOM_LEASE_TTL_S):
            return  # hosted by a living node (or its lease has not lapsed yet)
        # A room that just closed here has its room.finished still queued: let it land.
        await self.service.drain_events()
        fresh = await self.store.get(ROOMS_COLLECTION, rec.id)
        if fresh is None or fresh.data.get("status") != "active" or rec.id in self.service.rooms:
            return
        rec = fresh
        log.info("finishing room %s after its node stopped", rec.id)
        asset_id = rec.data.get("active_asset_id")
        if asset_id and self.broadcasts is not None:
            try:
                await self.broadcasts.adopt(rec.id, str(asset_id))
            except Exception:
                log.exception("room %s: adopting recording %s failed", rec.id, asset_id)
        await self.rooms.room_event(RoomFinished(rec.id, time.time(), "node_lost"))
        await self.store.release_lease(room_lease(rec.id), self.node_id)

    async def run(self) -> None:
        while True:
            try:
                await self.renew()
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rooms keeper failed")
            await asyncio.sleep(ROOM_HEARTBEAT_S)


class Rooms:
    """The node's rooms: the `RoomService` (its join tokens keyed from the store
    when the node starts) and the `RoomKeeper` loop."""

    def __init__(
        self,
        store: Store,
        service: RoomService,
        directory: StoreRooms,
        keeper: RoomKeeper,
        *,
        node_id: str,
        secret: str | None = None,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.service = service
        self.tokens: JoinTokens = service.tokens
        self.directory = directory
        self.keeper = keeper
        self._secret = secret
        self._keeping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.tokens.set_secret(self._secret or await load_token_secret(self.store))
        await self.service.start()
        self._keeping = asyncio.get_running_loop().create_task(
            self.keeper.run(), name="rooms-keeper"
        )

    async def close_all(self, reason: str = "shutdown") -> None:
        """Finish this node's rooms (room.finished; sockets close; recorded rooms
        end their broadcast): done first on a graceful shutdown, so open signaling
        sockets do not hold it up."""
        for room_id in list(self.service.rooms):
            try:
                await self.service.close_room(room_id, reason=reason)
            except Exception:
                log.exception("closing room %s on shutdown failed", room_id)
        await self.service.drain_events()

    async def release_all(self) -> int:
        """Hand this node's rooms on when another living node that is not draining
        can take them: participants are told ``moved`` (with that node's public
        URL) and reconnect through it, and whichever node they reach hosts the
        room from then on; the rooms stay ``active``, never finished here. Their
        leases are held `ROOM_MOVE_GRACE_S` more, then left to lapse, so no other
        node takes them for dead before people are back. Returns how many rooms
        went (0: nowhere to go)."""
        moved_to = await self._another_node()
        if moved_to is None:
            return 0  # nobody to move to: the graceful stop finishes them
        self.keeper.adopting = False
        released = 0
        for room_id in list(self.service.rooms):
            key = room_host_key(room_id)
            # Hold the lease a while longer: it may have been renewed seconds ago
            # or nearly have lapsed, and a node that finds an active room with
            # neither host nor lease finishes it, maybe before its participants
            # (slow on a loaded machine) are back through the new node.
            await self.store.acquire_lease(room_lease(room_id), self.node_id, ROOM_MOVE_GRACE_S)
            if await self.store.kv_get(key) == self.node_id:
                await self.store.kv_delete(key)
            if await self.service.release_room(room_id, moved_to):
                released += 1
        await self.service.drain_events()
        return released

    async def _another_node(self) -> str | None:
        """The public URL of a living node that is not draining (the least
        loaded with rooms), for participants to reconnect through."""
        best: tuple[int, str] | None = None
        for rec in await alive(self.store):
            d = rec.data
            url = d.get("public_url") or d.get("url")
            if rec.id == self.node_id or d.get("draining") or not url:
                continue
            rooms = int((d.get("load") or {}).get("rooms", 0))
            if best is None or rooms < best[0]:
                best = (rooms, str(url))
        return best[1] if best is not None else None

    async def stop(self) -> None:
        if self._keeping is not None:
            self._keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeping
            self._keeping = None
        await self.service.close()

    def live_count(self, room_id: str) -> int:
        return len(self.service.participants(room_id))

    async def hosted_at(self, room_id: str) -> str | None:
        """The base URL of another living node hosting `room_id`, if one does."""
        if room_id in self.service.rooms:
            return None
        owner = await self.store.kv_get(room_host_key(room_id))
        if not owner or owner == self.node_id:
            return None
        host = await self._living(owner)
        return host.url if host is not None else None

    async def _living(self, node_id: str) -> RoomHost | None:
        """`node_id` and where it is reached, while it is alive."""
        if await self.store.kv_get(alive_key(node_id)):
            url = await node_url(self.store, node_id)
            if url is not None:
                return RoomHost(node_id, url)
        return None

    async def host_elsewhere(self, room_id: str) -> RoomHost | None:
        """Where a participant joining `room_id` goes: the living node hosting it
        when that is not this one; None when this node hosts it (or takes it:
        nobody else does, or its host is dead)."""
        if room_id in self.service.rooms:
            return None
        key = room_host_key(room_id)
        for _ in range(3):
            if await self.store.kv_set_if_absent(key, self.node_id, ttl_s=ROOM_LEASE_TTL_S):
                await self._hold(room_id)
                return None
            owner = await self.store.kv_get(key)
            if owner is None:
                continue  # it lapsed meanwhile: claim it
            if owner == self.node_id:
                await self._hold(room_id)
                return None
            host = await self._living(owner)
            if host is not None:
                return host
            # its host is gone (or said nothing of where it is)
            if await self.take_over(room_id, owner):
                return None
        raise RoomHostContended(room_id)

    async def _hold(self, room_id: str) -> None:
        """Take the room's lease as soon as this node hosts it, not at the keeper's
        next renewal: until then another node's sweep would take it for dead."""
        await self.store.acquire_lease(room_lease(room_id), self.node_id, ROOM_LEASE_TTL_S)

    async def take_over(self, room_id: str, dead_host: str) -> bool:
        """Host `room_id` here instead of `dead_host`, unless another node already
        took it (False: ask `host_elsewhere` again)."""
        took = await self.store.kv_replace(
            room_host_key(room_id), dead_host, self.node_id, ttl_s=ROOM_LEASE_TTL_S
        )
        if took:
            await self._hold(room_id)
        return took
