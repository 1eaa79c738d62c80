"""The control side of `realtime.rooms`: rooms' stored state and the node's
room service.

Records: collection ``rooms``, data ``{name, max_participants, record,
empty_timeout_s, status ("idle"|"active"|"finished"), started_at, finished_at,
broadcast_stream_id, playback_ids, active_asset_id, asset_id}``. Status
changes are committed together with their events (``room.started``,
``room.finished``); ``participant.joined|left`` are committed as events with
resource id = the room id, so one room's events carry one increasing
``sequence``.

`StoreRooms` is the SFU's `RoomDirectory` and `RoomEvents` over the store;
`RoomKeeper` keeps the node's ``room:<id>`` leases and finishes rooms a dead
node left ``active`` (reason ``node_lost``); `Rooms` is the node's part that
runs both with the `RoomService` (the join-token secret, shared by every node,
is read from the store when it starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

from control.auth import rfc3339
from control.outbox import Change, Outbox
from control.room_broadcasts import RoomBroadcasts
from control.store.base import EventDraft, Put, Record, Store
from realtime.rooms.room import (
    ParticipantJoinedEvent,
    ParticipantLeftEvent,
    RoomConfig,
    RoomEvent,
    RoomFinished,
    RoomStarted,
)
from realtime.rooms.service import RoomService
from realtime.rooms.tokens import MAX_TTL_S, JoinTokens

log = logging.getLogger(__name__)

ROOMS_COLLECTION = "rooms"
TOKEN_SECRET_KV = "rooms:join_token_secret"


async def load_token_secret(store: Store) -> str:
    """The service's join-token secret: created once, shared by every node."""
    existing = await store.kv_get(TOKEN_SECRET_KV)
    if existing:
        return existing
    await store.kv_set_if_absent(TOKEN_SECRET_KV, secrets.token_urlsafe(48))
    value = await store.kv_get(TOKEN_SECRET_KV)
    assert value is not None
    return value


class StoreRooms:
    """`RoomDirectory` and `RoomEvents` over the store (commits through the outbox)."""

    def __init__(self, store: Store, outbox: Outbox) -> None:
        self.store = store
        self.outbox = outbox

    async def room_config(self, room_id: str) -> RoomConfig | None:
        rec = await self.store.get(ROOMS_COLLECTION, room_id)
        if rec is None or rec.data.get("status") == "finished":
            return None
        d = rec.data
        return RoomConfig(
            room_id=rec.id,
            max_participants=int(d.get("max_participants", 16)),
            empty_timeout_s=float(d.get("empty_timeout_s", 300)),
            record=bool(d.get("record", False)),
            broadcast_stream_id=d.get("broadcast_stream_id") or None,
        )

    async def deny(self, room_id: str, identity: str, before: float) -> None:
        # kept while a token issued before the removal can still be valid
        await self.store.kv_set(_denial_key(room_id, identity), repr(before), ttl_s=MAX_TTL_S)

    async def denied_before(self, room_id: str, identity: str) -> float | None:
        value = await self.store.kv_get(_denial_key(room_id, identity))
        return float(value) if value else None

    async def room_event(self, event: RoomEvent) -> None:
        data: dict[str, Any] = {"room_id": event.room_id, "occurred_at": rfc3339(event.at)}
        if isinstance(event, ParticipantJoinedEvent | ParticipantLeftEvent):
            data["identity"] = event.identity
            if isinstance(event, ParticipantLeftEvent):
                data["reason"] = event.reason
            await self.outbox.commit([], [EventDraft(event.type, event.room_id, data)])
            return
        if isinstance(event, RoomFinished):
            data["reason"] = event.reason
        status = "active" if isinstance(event, RoomStarted) else "finished"
        stamp = "started_at" if isinstance(event, RoomStarted) else "finished_at"

        async def attempt() -> Change[None]:
            rec = await self.store.get(ROOMS_COLLECTION, event.room_id)
            if rec is None:  # deleted meanwhile: the event still happened
                return Change(None, (), [EventDraft(event.type, event.room_id, data)])
            new = dict(rec.data, status=status, **{stamp: event.at})
            if status == "active":
                new["finished_at"] = None
            return Change(
                None,
                [
                    Put(
                        ROOMS_COLLECTION,
                        rec.id,
                        new,
                        expect_version=rec.version,
                        tags={"status": status},
                    )
                ],
                [EventDraft(event.type, event.room_id, {**data, "room": room_view(rec, new)})],
            )

        await self.outbox.compare_and_set(attempt, what=f"room {event.room_id}")


def _denial_key(room_id: str, identity: str) -> str:
    return f"room_denied:{room_id}:{identity}"


def room_view(
    rec: Record, data: dict[str, Any] | None = None, participants: int | None = None
) -> dict[str, Any]:
    """The API view of a room (`data`: its data about to be committed)."""
    d = data if data is not None else rec.data
    out: dict[str, Any] = {
        "id": rec.id,
        "object": "room",
        "name": d.get("name"),
        "status": d.get("status", "idle"),
        "max_participants": d.get("max_participants", 16),
        "record": bool(d.get("record", False)),
        "playback_policy": d.get("playback_policy", "public"),
        "empty_timeout_s": d.get("empty_timeout_s", 300),
        "passthrough": d.get("passthrough"),
        "broadcast_stream_id": d.get("broadcast_stream_id"),
        "playback_ids": list(d.get("playback_ids", [])),
        "active_asset_id": d.get("active_asset_id"),
        "asset_id": d.get("asset_id"),
        "created_at": rfc3339(rec.created_at),
        "started_at": rfc3339(d.get("started_at")),
        "finished_at": rfc3339(d.get("finished_at")),
    }
    if participants is not None:
        out["num_participants"] = participants
    return out


ROOM_LEASE_TTL_S = 8.0
ROOM_HEARTBEAT_S = 2.0


def room_lease(room_id: str) -> str:
    return f"room:{room_id}"


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

    async def renew(self) -> None:
        for room_id in list(self.service.rooms):
            await self.store.acquire_lease(room_lease(room_id), self.node_id, ROOM_LEASE_TTL_S)

    async def sweep(self) -> None:
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
        secret: str | None = None,
    ) -> None:
        self.store = store
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

    async def stop(self) -> None:
        if self._keeping is not None:
            self._keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeping
            self._keeping = None
        await self.service.close()

    def live_count(self, room_id: str) -> int:
        return len(self.service.participants(room_id))
