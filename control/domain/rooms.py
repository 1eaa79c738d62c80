"""Rooms' stored state: the ``rooms`` collection, its API view, and the store
side of the SFU (`StoreRooms`: the `RoomDirectory` and `RoomEvents` of
`realtime.rooms`).

Records: collection ``rooms``, data ``{name, max_participants, record,
empty_timeout_s, status ("idle"|"active"|"finished"), started_at, finished_at,
broadcast_stream_id, playback_ids, active_asset_id, asset_id}``. Status
changes are committed together with their events (``room.started``,
``room.finished``); ``participant.joined|left`` are committed as events with
resource id = the room id, so one room's events carry one increasing
``sequence``. The join-token secret every node shares is a store key
(`load_token_secret`).
"""

from __future__ import annotations

import secrets
from typing import Any

from control.domain.api_keys import rfc3339
from control.domain.errors import NotFoundError
from control.domain.live_streams import new_playback_id, playback_id_deletes, playback_id_put
from control.domain.records import Collection
from control.ids import new_id
from control.outbox import Change, Outbox
from control.store.base import EventDraft, Op, Record, Store
from realtime.rooms.room import (
    ParticipantJoinedEvent,
    ParticipantLeftEvent,
    RoomConfig,
    RoomEvent,
    RoomFinished,
    RoomStarted,
)
from realtime.rooms.tokens import MAX_TTL_S

ROOM_RECORDS = Collection("rooms", tags=lambda d: {"status": str(d.get("status", "idle"))})
ROOMS_COLLECTION = ROOM_RECORDS.name
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
                [ROOM_RECORDS.put(rec.id, new, expect_version=rec.version)],
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


async def create_room(outbox: Outbox, fields: dict[str, Any]) -> Record:
    """A new room (``idle``); a recorded one gets a playback id for its broadcast."""
    room_id = new_id("rm")
    policy = fields["playback_policy"]
    playback_ids = [{"id": new_playback_id(), "policy": policy}] if fields["record"] else []
    data: dict[str, Any] = {
        **fields,
        "status": "idle",
        "started_at": None,
        "finished_at": None,
        "broadcast_stream_id": room_id if fields["record"] else None,
        "playback_ids": playback_ids,
    }
    # A recorded room is broadcast: its playback id plays the composite over
    # LL-HLS while the room runs and its asset afterwards (control.room_broadcasts).
    ops: list[Op] = [ROOM_RECORDS.put(room_id, data)]
    ops += [playback_id_put(p["id"], "room", room_id, p["policy"]) for p in playback_ids]
    await outbox.commit(ops)
    rec = await outbox.store.get(ROOMS_COLLECTION, room_id)
    if rec is None:
        raise NotFoundError("room", room_id)
    return rec


async def delete_room_records(outbox: Outbox, room_id: str) -> None:
    """The room's record and its playback ids go (its sessions are closed first)."""
    rec = await outbox.store.get(ROOMS_COLLECTION, room_id)
    if rec is not None:
        await outbox.commit([ROOM_RECORDS.delete(rec.id), *playback_id_deletes(rec.data)])


async def get_room(store: Store, room_id: str) -> Record:
    rec = await store.get(ROOMS_COLLECTION, room_id)
    if rec is None:
        raise NotFoundError("room", room_id)
    return rec
