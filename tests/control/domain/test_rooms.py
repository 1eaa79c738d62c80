"""Rooms' stored state without HTTP: a recorded room gets a playback id, its
lifecycle events are committed with its status, and deleting takes its ids."""

from __future__ import annotations

import time

import pytest

from control.domain.errors import NotFoundError
from control.domain.live_streams import PLAYBACK_IDS
from control.domain.rooms import StoreRooms, create_room, delete_room_records, get_room
from control.outbox import Outbox
from control.store.base import Store
from realtime.rooms.room import ParticipantJoinedEvent, RoomFinished, RoomStarted
from tests.control.domain.conftest import events

FIELDS = {
    "name": "Standup",
    "max_participants": 4,
    "record": True,
    "empty_timeout_s": 60,
    "passthrough": None,
    "playback_policy": "signed",
}


async def test_a_recorded_room_is_broadcast_under_a_playback_id(
    store: Store, outbox: Outbox
) -> None:
    room = await create_room(outbox, dict(FIELDS))
    assert room.data["status"] == "idle" and room.data["broadcast_stream_id"] == room.id
    (pid,) = room.data["playback_ids"]
    playback = await store.get(PLAYBACK_IDS, pid["id"])
    assert playback is not None and playback.data["object_type"] == "room"
    plain = await create_room(outbox, {**FIELDS, "record": False})
    assert plain.data["playback_ids"] == [] and plain.data["broadcast_stream_id"] is None


async def test_room_events_are_committed_with_the_status_they_set(
    store: Store, outbox: Outbox
) -> None:
    room = await create_room(outbox, dict(FIELDS))
    directory = StoreRooms(store, outbox)
    config = await directory.room_config(room.id)
    assert config is not None and config.record and config.max_participants == 4
    now = time.time()
    await directory.room_event(RoomStarted(room.id, now))
    await directory.room_event(ParticipantJoinedEvent(room.id, "alice", now))
    assert (await get_room(store, room.id)).data["status"] == "active"
    await directory.room_event(RoomFinished(room.id, now, "empty_timeout"))
    assert (await get_room(store, room.id)).data["status"] == "finished"
    assert await directory.room_config(room.id) is None  # finished: no one joins
    got = [(e.type, e.data.get("room", {}).get("status")) for e in await events(store, room.id)]
    assert got == [
        ("room.started", "active"),
        ("participant.joined", None),
        ("room.finished", "finished"),
    ]


async def test_deleting_takes_the_playback_ids_and_a_deleted_room_is_not_found(
    store: Store, outbox: Outbox
) -> None:
    room = await create_room(outbox, dict(FIELDS))
    await delete_room_records(outbox, room.id)
    assert await store.get(PLAYBACK_IDS, room.data["playback_ids"][0]["id"]) is None
    with pytest.raises(NotFoundError):
        await get_room(store, room.id)
    # an event after deletion still happened: it is committed without a record
    await StoreRooms(store, outbox).room_event(RoomFinished(room.id, time.time(), "deleted"))
    assert [e.type for e in await events(store, room.id)][-1] == "room.finished"
