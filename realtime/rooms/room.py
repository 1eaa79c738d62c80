"""Room state: participants, their published tracks, subscriptions, lifecycle.

Pure state, no I/O. Lifecycles are an Enum plus one transition function that
validates and emits one event:

    room:        IDLE --first_join--> ACTIVE --finish--> FINISHED   (IDLE --finish--> FINISHED)
    participant: JOINED --leave--> LEFT

Room events (`RoomStarted`, `RoomFinished`, `ParticipantJoinedEvent`,
`ParticipantLeftEvent`) carry ``type`` strings matching the API's event names.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Literal

from realtime.rooms.tokens import JoinGrant


class RoomStatus(enum.Enum):
    IDLE = "idle"
    ACTIVE = "active"
    FINISHED = "finished"


class RoomTrigger(enum.Enum):
    FIRST_JOIN = "first_join"
    FINISH = "finish"


class ParticipantStatus(enum.Enum):
    JOINED = "joined"
    LEFT = "left"


class RoomError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class RoomStarted:
    room_id: str
    at: float
    type: Literal["room.started"] = "room.started"


@dataclass(frozen=True, slots=True)
class RoomFinished:
    room_id: str
    at: float
    reason: str
    """"empty_timeout" | "deleted" | "shutdown"."""
    type: Literal["room.finished"] = "room.finished"


@dataclass(frozen=True, slots=True)
class ParticipantJoinedEvent:
    room_id: str
    identity: str
    at: float
    type: Literal["participant.joined"] = "participant.joined"


@dataclass(frozen=True, slots=True)
class ParticipantLeftEvent:
    room_id: str
    identity: str
    at: float
    reason: str
    """"left" | "disconnected" | "removed" | "replaced" | "room_closed"."""
    type: Literal["participant.left"] = "participant.left"


RoomEvent = RoomStarted | RoomFinished | ParticipantJoinedEvent | ParticipantLeftEvent


def transition(
    status: RoomStatus, trigger: RoomTrigger, room_id: str, at: float, reason: str = ""
) -> tuple[RoomStatus, RoomEvent]:
    """The room's one transition function."""
    if status is RoomStatus.IDLE and trigger is RoomTrigger.FIRST_JOIN:
        return RoomStatus.ACTIVE, RoomStarted(room_id, at)
    if status is not RoomStatus.FINISHED and trigger is RoomTrigger.FINISH:
        return RoomStatus.FINISHED, RoomFinished(room_id, at, reason or "deleted")
    raise RoomError(
        "bad_transition", f"room {room_id}: {trigger.value} not allowed in {status.value}"
    )


def participant_transition(
    status: ParticipantStatus | None,
    to: ParticipantStatus,
    room_id: str,
    identity: str,
    at: float,
    reason: str = "",
) -> tuple[ParticipantStatus, RoomEvent]:
    if status is None and to is ParticipantStatus.JOINED:
        return to, ParticipantJoinedEvent(room_id, identity, at)
    if status is ParticipantStatus.JOINED and to is ParticipantStatus.LEFT:
        return to, ParticipantLeftEvent(room_id, identity, at, reason or "left")
    raise RoomError("bad_transition", f"participant {identity}: {status} -> {to.value}")


@dataclass(frozen=True, slots=True)
class RoomConfig:
    room_id: str
    max_participants: int = 16
    empty_timeout_s: float = 300.0
    record: bool = False
    broadcast_stream_id: str | None = None
    """Hub stream id for the composite when `record` (defaults to the room id)."""


@dataclass(slots=True)
class PublishedTrack:
    track_id: str
    identity: str
    kind: Literal["audio", "video"]
    source: str
    mid: str
    muted: bool = False


@dataclass(slots=True)
class ParticipantState:
    identity: str
    grant: JoinGrant
    joined_at: float
    status: ParticipantStatus = ParticipantStatus.JOINED
    tracks: dict[str, PublishedTrack] = field(default_factory=dict)
    subscriptions: set[str] = field(default_factory=set)
    auto_subscribe: bool = True


class Room:
    """One room's membership and tracks. Methods return the events they cause."""

    def __init__(self, config: RoomConfig) -> None:
        self.config = config
        self.id = config.room_id
        self.status = RoomStatus.IDLE
        self.participants: dict[str, ParticipantState] = {}
        self.created_at = time.time()
        self.empty_since: float | None = time.monotonic()

    def join(self, grant: JoinGrant, *, auto_subscribe: bool = True) -> list[RoomEvent]:
        if self.status is RoomStatus.FINISHED:
            raise RoomError("room_finished", "the room has finished")
        if grant.identity in self.participants:
            raise RoomError("identity_taken", f"{grant.identity} is already in the room")
        if len(self.participants) >= self.config.max_participants:
            raise RoomError("room_full", "the room is full")
        now = time.time()
        events: list[RoomEvent] = []
        if self.status is RoomStatus.IDLE:
            self.status, ev = transition(self.status, RoomTrigger.FIRST_JOIN, self.id, now)
            events.append(ev)
        status, ev = participant_transition(
            None, ParticipantStatus.JOINED, self.id, grant.identity, now
        )
        self.participants[grant.identity] = ParticipantState(
            grant.identity, grant, now, status, auto_subscribe=auto_subscribe
        )
        events.append(ev)
        self.empty_since = None
        return events

    def leave(self, identity: str, reason: str) -> list[RoomEvent]:
        p = self.participants.pop(identity, None)
        if p is None:
            return []
        p.status, ev = participant_transition(
            p.status, ParticipantStatus.LEFT, self.id, identity, time.time(), reason
        )
        for other in self.participants.values():
            other.subscriptions.difference_update(p.tracks)
        if not self.participants:
            self.empty_since = time.monotonic()
        return [ev]

    def finish(self, reason: str) -> list[RoomEvent]:
        if self.status is RoomStatus.FINISHED:
            return []
        events: list[RoomEvent] = []
        for identity in list(self.participants):
            events += self.leave(identity, "room_closed")
        self.status, ev = transition(self.status, RoomTrigger.FINISH, self.id, time.time(), reason)
        events.append(ev)
        return events

    def add_track(self, track: PublishedTrack) -> None:
        p = self.participants[track.identity]
        if not p.grant.can_publish:
            raise RoomError("forbidden", "this token may not publish")
        p.tracks[track.track_id] = track

    def remove_track(self, identity: str, track_id: str) -> PublishedTrack | None:
        p = self.participants.get(identity)
        if p is None:
            return None
        t = p.tracks.pop(track_id, None)
        for other in self.participants.values():
            other.subscriptions.discard(track_id)
        return t

    def track(self, track_id: str) -> PublishedTrack | None:
        for p in self.participants.values():
            t = p.tracks.get(track_id)
            if t is not None:
                return t
        return None

    def subscribable(self, identity: str) -> list[PublishedTrack]:
        """Tracks of the others that `identity` may receive."""
        return [
            t
            for p in self.participants.values()
            if p.identity != identity
            for t in p.tracks.values()
        ]

    def empty_for(self) -> float:
        if self.empty_since is None:
            return 0.0
        return time.monotonic() - self.empty_since
