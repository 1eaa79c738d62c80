"""Room state: one transition function per lifecycle, events in order."""

from __future__ import annotations

import pytest

from realtime.rooms.room import (
    ParticipantJoinedEvent,
    ParticipantLeftEvent,
    PublishedTrack,
    Room,
    RoomConfig,
    RoomError,
    RoomFinished,
    RoomStarted,
    RoomStatus,
    RoomTrigger,
    transition,
)
from realtime.rooms.tokens import JoinGrant


def grant(identity: str, *, publish: bool = True) -> JoinGrant:
    return JoinGrant(identity, "RM_1", publish, True, 0, 2**31, "j")


def test_transitions() -> None:
    assert transition(RoomStatus.IDLE, RoomTrigger.FIRST_JOIN, "r", 1.0) == (
        RoomStatus.ACTIVE,
        RoomStarted("r", 1.0),
    )
    status, ev = transition(RoomStatus.ACTIVE, RoomTrigger.FINISH, "r", 2.0, "empty_timeout")
    assert status is RoomStatus.FINISHED and ev == RoomFinished("r", 2.0, "empty_timeout")
    with pytest.raises(RoomError):
        transition(RoomStatus.FINISHED, RoomTrigger.FINISH, "r", 3.0)
    with pytest.raises(RoomError):
        transition(RoomStatus.ACTIVE, RoomTrigger.FIRST_JOIN, "r", 3.0)


def test_join_leave_finish_emit_events_in_order() -> None:
    room = Room(RoomConfig("RM_1", max_participants=2))
    evs = room.join(grant("a")) + room.join(grant("b"))
    assert [type(e) for e in evs] == [RoomStarted, ParticipantJoinedEvent, ParticipantJoinedEvent]
    with pytest.raises(RoomError) as full:
        room.join(grant("c"))
    assert full.value.code == "room_full"
    with pytest.raises(RoomError) as taken:
        room.join(grant("a"))
    assert taken.value.code == "identity_taken"
    room.add_track(PublishedTrack("TR_1", "a", "video", "camera", "0"))
    room.participants["b"].subscriptions.add("TR_1")
    assert [t.track_id for t in room.subscribable("b")] == ["TR_1"]
    left = room.leave("a", "left")
    assert left == [ParticipantLeftEvent("RM_1", "a", left[0].at, "left")]
    assert room.participants["b"].subscriptions == set()
    end = room.finish("deleted")
    assert [e.type for e in end] == ["participant.left", "room.finished"]
    assert room.status is RoomStatus.FINISHED
    with pytest.raises(RoomError):
        room.join(grant("d"))


def test_a_participant_without_publish_rights_cannot_add_tracks() -> None:
    room = Room(RoomConfig("RM_1"))
    room.join(grant("v", publish=False))
    with pytest.raises(RoomError) as e:
        room.add_track(PublishedTrack("TR_1", "v", "audio", "microphone", "0"))
    assert e.value.code == "forbidden"
