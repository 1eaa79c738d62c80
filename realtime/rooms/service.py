"""`RoomService`: the live rooms of this process and their participants.

Owns: in-memory `Room`s (created on first join, dropped when finished), one
`Session` per connected participant (its two peers, its published
`TrackSource`s), the empty-room timeout, disconnect detection (publish/subscribe
PC ``failed``/``closed``, and no media at all from a publisher for
``media_timeout_s``), and the ordered delivery of room events to a `RoomEvents`
sink (control connects it to the store and webhooks). With ``record``, a
`RoomComposite` publishes the room into the hub.

The control plane reaches it through `RoomDirectory` (is there such a room,
with what settings) and `RoomEvents` (what happened), both small Protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ingest.hub import Hub
from realtime.rooms import signaling as sig
from realtime.rooms.forwarder import TrackSource
from realtime.rooms.peer import IncomingTrack, PublishPeer, SubscribePeer
from realtime.rooms.room import (
    PublishedTrack,
    Room,
    RoomConfig,
    RoomError,
    RoomEvent,
    RoomStatus,
)
from realtime.rooms.rtc import RtcSettings
from realtime.rooms.tokens import JoinGrant, JoinTokens

log = logging.getLogger(__name__)


class RoomDirectory(Protocol):
    async def room_config(self, room_id: str) -> RoomConfig | None:
        """The room's settings, or None when there is no such open room."""
        ...

    async def deny(self, room_id: str, identity: str, before: float) -> None:
        """Refuse `identity`'s join tokens issued at or before `before` (removal),
        for as long as such a token can still be valid."""
        ...

    async def denied_before(self, room_id: str, identity: str) -> float | None:
        """When `identity` was last removed from the room (None: never)."""
        ...


class RoomEvents(Protocol):
    async def room_event(self, event: RoomEvent) -> None:
        """Called once per event, in order, never concurrently."""
        ...


class NullRoomEvents:
    async def room_event(self, event: RoomEvent) -> None:
        return None


class StaticDirectory:
    """A fixed set of rooms (tests, benchmarks)."""

    def __init__(self, *configs: RoomConfig) -> None:
        self.rooms = {c.room_id: c for c in configs}
        self.denials: dict[tuple[str, str], float] = {}

    async def room_config(self, room_id: str) -> RoomConfig | None:
        return self.rooms.get(room_id)

    async def deny(self, room_id: str, identity: str, before: float) -> None:
        self.denials[room_id, identity] = before

    async def denied_before(self, room_id: str, identity: str) -> float | None:
        return self.denials.get((room_id, identity))


Send = Callable[[sig.ServerMessage], Awaitable[None]]


class Session:
    """One connected participant."""

    def __init__(self, service: RoomService, room: Room, grant: JoinGrant, send: Send) -> None:
        self.service = service
        self.room = room
        self.grant = grant
        self.identity = grant.identity
        self._send = send
        self.closed = False
        self.close_reason = ""
        self.closed_event = asyncio.Event()
        self._specs: dict[str, sig.TrackSpec] = {}
        self.sources: dict[str, TrackSource] = {}
        self.publish = PublishPeer(service.rtc, service.video_codec, self._on_pc_state)
        self.subscribe = SubscribePeer(
            service.rtc, service.video_codec, self.send, self._on_pc_state
        )

    async def send(self, msg: sig.ServerMessage) -> None:
        if self.closed:
            return
        try:
            await self._send(msg)
        except Exception:
            log.debug("send to %s failed", self.identity, exc_info=True)

    def send_soon(self, msg: sig.ServerMessage) -> None:
        self.service._spawn(self.send(msg))

    # -- messages ------------------------------------------------------------------------
    async def handle(self, msg: sig.ClientMessage) -> None:
        """Handle one parsed message; raises `SignalingError` for refusals."""
        if self.closed:
            raise sig.SignalingError("not_joined", "the session has ended")
        match msg:
            case sig.Publish(tracks=tracks):
                self._require_publish()
                for spec in tracks:
                    self._specs[spec.mid] = spec
            case sig.Offer(sdp=sdp):
                self._require_publish()
                if "\nm=" not in sdp:
                    raise sig.SignalingError("bad_offer", "the offer has no media sections")
                try:
                    answer, incoming = await self.publish.answer(sdp)
                except Exception as exc:
                    raise sig.SignalingError("bad_offer", f"cannot answer: {exc}") from None
                await self.send(sig.Answer("publish", answer))
                for inc in incoming:
                    self._on_track(inc)
            case sig.Answer(sdp=sdp):
                if not self.subscribe.handle_answer(sdp):
                    raise sig.SignalingError(
                        "unexpected_answer", "no offer is waiting for an answer"
                    )
            case sig.Unpublish(track_ids=ids):
                for tid in ids:
                    if tid not in self.sources:
                        raise sig.SignalingError("unknown_track", f"not your track: {tid}")
                for tid in ids:
                    await self.service._unpublish(self, tid)
            case sig.Subscribe(track_ids=ids):
                self._require_subscribe()
                p = self.room.participants[self.identity]
                for tid in ids:
                    t = self.room.track(tid)
                    if t is None or t.identity == self.identity:
                        raise sig.SignalingError("unknown_track", f"no such track: {tid}")
                p.subscriptions.update(ids)
                self.service._sync_subscriptions(self)
            case sig.Unsubscribe(track_ids=ids):
                p = self.room.participants[self.identity]
                p.subscriptions.difference_update(ids)
                self.service._sync_subscriptions(self)
            case sig.Mute(track_id=tid, muted=muted):
                src = self.sources.get(tid)
                t = self.room.participants[self.identity].tracks.get(tid)
                if src is None or t is None:
                    raise sig.SignalingError("unknown_track", f"not your track: {tid}")
                src.set_muted(muted)
                t.muted = muted
                self.service._broadcast(self.room, sig.Muted(self.identity, tid, muted))
            case sig.Leave():
                await self.service._end_session(self, "left")
            case sig.Join():
                raise sig.SignalingError("already_joined", "already joined")

    def _require_publish(self) -> None:
        if not self.grant.can_publish:
            raise sig.SignalingError(
                "forbidden", "this token may not publish (can_publish is false)"
            )

    def _require_subscribe(self) -> None:
        if not self.grant.can_subscribe:
            raise sig.SignalingError("forbidden", "this token may not subscribe")

    # -- peer callbacks ------------------------------------------------------------------
    def _on_track(self, inc: IncomingTrack) -> None:
        if self.closed:
            return
        mid, kind = inc.mid, inc.kind
        spec = self._specs.get(mid)
        source_name = spec.source if spec else ("camera" if kind == "video" else "microphone")
        track_id = "TR_" + secrets.token_urlsafe(9)
        src = TrackSource(track_id, kind, inc.track, inc.receiver)
        src.mime_type = inc.mime_type or None
        self.sources[track_id] = src
        src.start()
        pt = PublishedTrack(
            track_id, self.identity, "video" if kind == "video" else "audio", source_name, mid
        )
        self.service._published(self, pt, src)

    def _on_pc_state(self, state: str) -> None:
        if state in ("failed", "closed") and not self.closed:
            self.service._spawn(self.service._end_session(self, "disconnected"))

    async def _close_media(self) -> None:
        for src in self.sources.values():
            await src.stop()
        await self.subscribe.close()
        await self.publish.close()


class ActiveRoom:
    def __init__(self, room: Room) -> None:
        self.room = room
        self.sessions: dict[str, Session] = {}
        self.composite: Any = None
        self.lock = asyncio.Lock()


class RoomService:
    """Live rooms of this process. Start with `await start()`, stop with `close()`."""

    def __init__(
        self,
        tokens: JoinTokens,
        directory: RoomDirectory,
        events: RoomEvents | None = None,
        *,
        hub: Hub | None = None,
        rtc: RtcSettings | None = None,
        video_codec: str = "video/VP8",
        media_timeout_s: float = 4.0,
        sweep_interval_s: float = 0.5,
        composite_factory: Callable[[Hub, RoomConfig], Any] | None = None,
    ) -> None:
        self.tokens = tokens
        self.directory = directory
        self.events: RoomEvents = events or NullRoomEvents()
        self.hub = hub
        self.rtc = rtc or RtcSettings()
        self.video_codec = video_codec
        self.media_timeout_s = media_timeout_s
        self.sweep_interval_s = sweep_interval_s
        self._composite_factory = composite_factory
        self.rooms: dict[str, ActiveRoom] = {}
        self._events_q: asyncio.Queue[RoomEvent] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pump: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._rooms_open = asyncio.Event()
        """Set while `rooms` may be non-empty: the sweeper sleeps on it otherwise,
        so a server without rooms is not woken twice a second for nothing."""
        self.event_log: list[RoomEvent] = []
        """Every event emitted (most recent 1000), for tests and debugging."""
        self.accepting_rooms = True
        """False while the node drains: rooms already here go on, no new one opens."""

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._pump is None:
            self._pump = asyncio.create_task(self._pump_events(), name="rooms-events")
            self._sweeper = asyncio.create_task(self._sweep(), name="rooms-sweeper")

    async def close(self) -> None:
        for rid in list(self.rooms):
            await self.close_room(rid, reason="shutdown")
        await self.drain_events()
        for t in (self._pump, self._sweeper):
            if t is not None:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        self._pump = self._sweeper = None
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain_events(self, timeout_s: float = 5.0) -> None:
        """Wait until every emitted event reached the `RoomEvents` sink."""
        if self._pump is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._events_q.join(), timeout_s)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, events: list[RoomEvent]) -> None:
        for ev in events:
            self.event_log.append(ev)
            self._events_q.put_nowait(ev)
        del self.event_log[:-1000]

    async def _pump_events(self) -> None:
        while True:
            ev = await self._events_q.get()
            try:
                await self.events.room_event(ev)
            except Exception:
                log.exception("room event sink failed for %s", ev.type)
            finally:
                self._events_q.task_done()

    async def _sweep(self) -> None:
        while True:
            if not self.rooms:
                self._rooms_open.clear()
                await self._rooms_open.wait()
            await asyncio.sleep(self.sweep_interval_s)
            now = time.monotonic()
            for rid, ar in list(self.rooms.items()):
                try:  # one room's failure must not stop the sweeper for every room
                    room = ar.room
                    if not room.participants and room.empty_for() >= room.config.empty_timeout_s:
                        await self.close_room(rid, reason="empty_timeout")
                        continue
                    for s in list(ar.sessions.values()):
                        if s.sources and all(
                            now - src.last_frame_at > self.media_timeout_s
                            for src in s.sources.values()
                        ):
                            await self._end_session(s, "disconnected")
                except Exception:
                    log.exception("room sweep failed for %s", rid)

    # -- joining ---------------------------------------------------------------------------------
    async def join(
        self, room_id: str, grant: JoinGrant, send: Send, *, auto_subscribe: bool = True
    ) -> Session:
        """Add a participant; raises `RoomError` (room_not_found, room_full,
        participant_removed, ...)."""
        removed_at = await self.directory.denied_before(room_id, grant.identity)
        if removed_at is not None and grant.issued_at <= removed_at:
            raise RoomError(
                "participant_removed",
                "this participant was removed from the room; a new join token is needed",
            )
        ar = self.rooms.get(room_id)
        if ar is None:
            if not self.accepting_rooms:
                raise RoomError("server_draining", "this server is draining: join through another")
            config = await self.directory.room_config(room_id)
            if config is None:
                raise RoomError("room_not_found", "no such room, or it has finished")
            ar = self.rooms.get(room_id)
            if ar is None:
                ar = self.rooms[room_id] = ActiveRoom(Room(config))
                self._rooms_open.set()
        old = ar.sessions.get(grant.identity)
        if old is not None:
            await self._end_session(old, "replaced")
        room = ar.room
        events = room.join(grant, auto_subscribe=auto_subscribe and grant.can_subscribe)
        session = Session(self, room, grant, send)
        ar.sessions[grant.identity] = session
        if room.config.record and ar.composite is None and self.hub is not None:
            ar.composite = self._make_composite(room.config)
        self._emit(events)
        others = tuple(
            self._participant_desc(p.identity, room)
            for p in room.participants.values()
            if p.identity != grant.identity
        )
        await session.send(
            sig.Joined(grant.identity, room_id, others, grant.can_publish, grant.can_subscribe)
        )
        self._broadcast(
            room,
            sig.ParticipantJoined(self._participant_desc(grant.identity, room)),
            exclude=grant.identity,
        )
        p = room.participants[grant.identity]
        if p.auto_subscribe:
            p.subscriptions.update(t.track_id for t in room.subscribable(grant.identity))
            self._sync_subscriptions(session)
        return session

    def _make_composite(self, config: RoomConfig) -> Any:
        assert self.hub is not None
        factory = self._composite_factory
        if factory is None:
            from realtime.rooms.composite import RoomComposite

            def factory(hub: Hub, cfg: RoomConfig) -> Any:
                return RoomComposite(hub, cfg.broadcast_stream_id or cfg.room_id)

        comp = factory(self.hub, config)
        comp.start()
        return comp

    @staticmethod
    def _participant_desc(identity: str, room: Room) -> sig.ParticipantDesc:
        p = room.participants[identity]
        return sig.ParticipantDesc(
            identity,
            tuple(sig.TrackDesc(t.track_id, t.kind, t.source, t.muted) for t in p.tracks.values()),
        )

    def _broadcast(self, room: Room, msg: sig.ServerMessage, exclude: str | None = None) -> None:
        ar = self.rooms.get(room.id)
        if ar is None:
            return
        for ident, s in ar.sessions.items():
            if ident != exclude:
                s.send_soon(msg)

    def _sync_subscriptions(self, session: Session) -> None:
        ar = self.rooms.get(session.room.id)
        if ar is None or session.closed:
            return
        p = session.room.participants.get(session.identity)
        if p is None:
            return
        desired: dict[str, tuple[TrackSource, str]] = {}
        for tid in p.subscriptions:
            t = session.room.track(tid)
            if t is None:
                continue
            owner = ar.sessions.get(t.identity)
            if owner is None or tid not in owner.sources:
                continue
            desired[tid] = (owner.sources[tid], t.identity)
        session.subscribe.set_desired(desired)

    def _published(self, session: Session, track: PublishedTrack, src: TrackSource) -> None:
        room = session.room
        ar = self.rooms.get(room.id)
        if ar is None:
            return
        room.add_track(track)
        if ar.composite is not None:
            ar.composite.add_source(session.identity, src)
        self._broadcast(
            room,
            sig.TrackPublished(
                session.identity,
                sig.TrackDesc(track.track_id, track.kind, track.source, track.muted),
            ),
        )
        for other in ar.sessions.values():
            if other is session:
                continue
            p = room.participants.get(other.identity)
            if p is not None and p.auto_subscribe:
                p.subscriptions.add(track.track_id)
                self._sync_subscriptions(other)

    async def _unpublish(self, session: Session, track_id: str) -> None:
        room = session.room
        room.remove_track(session.identity, track_id)
        src = session.sources.pop(track_id, None)
        ar = self.rooms.get(room.id)
        if ar is not None:
            if ar.composite is not None and src is not None:
                ar.composite.remove_source(src)
            for other in ar.sessions.values():
                if other is not session:
                    self._sync_subscriptions(other)
        if src is not None:
            await src.stop()
        self._broadcast(room, sig.TrackUnpublished(session.identity, track_id))

    async def _end_session(self, session: Session, reason: str) -> None:
        if session.closed:
            return
        room = session.room
        ar = self.rooms.get(room.id)
        track_ids = list(session.sources)
        if ar is not None and ar.sessions.get(session.identity) is session:
            del ar.sessions[session.identity]
            if ar.composite is not None:
                for src in session.sources.values():
                    ar.composite.remove_source(src)
            self._emit(room.leave(session.identity, reason))
            for tid in track_ids:
                self._broadcast(room, sig.TrackUnpublished(session.identity, tid))
            self._broadcast(room, sig.ParticipantLeft(session.identity, reason))
            for other in ar.sessions.values():
                self._sync_subscriptions(other)
        session.close_reason = reason
        if reason not in ("left", "disconnected"):
            await session.send(sig.Error(reason, f"you were disconnected: {reason}"))
        session.closed = True
        session.closed_event.set()
        await session._close_media()

    # -- control --------------------------------------------------------------------
    async def close_room(self, room_id: str, reason: str = "deleted") -> bool:
        """Disconnect everyone and finish the room (room.finished)."""
        ar = self.rooms.get(room_id)
        if ar is None:
            return False
        async with ar.lock:
            for s in list(ar.sessions.values()):
                await self._end_session(s, "room_closed")
            if ar.room.status is not RoomStatus.FINISHED:
                self._emit(ar.room.finish(reason))
            if ar.composite is not None:
                await ar.composite.close()
                ar.composite = None
            self.rooms.pop(room_id, None)
        return True

    async def release_room(self, room_id: str, moved_to: str | None = None) -> bool:
        """Let another server host the room: everyone is disconnected with
        ``moved`` (clients reconnect — through `moved_to`, a server that reaches
        the room, when given — and find the room wherever it is hosted next) and
        the room leaves this server without finishing."""
        ar = self.rooms.get(room_id)
        if ar is None:
            return False
        async with ar.lock:
            for s in list(ar.sessions.values()):
                if moved_to is not None:
                    await s.send(sig.Moved(moved_to))
                await self._end_session(s, "moved")
            if ar.composite is not None:
                await ar.composite.close()
                ar.composite = None
            self.rooms.pop(room_id, None)
        return True

    async def remove_participant(self, room_id: str, identity: str) -> bool:
        """End `identity`'s session and refuse the tokens it holds (a kicked
        participant must not walk back in with the same token)."""
        ar = self.rooms.get(room_id)
        s = ar.sessions.get(identity) if ar else None
        if s is None:
            return False
        await self.directory.deny(room_id, identity, time.time())
        await self._end_session(s, "removed")
        return True

    def participants(self, room_id: str) -> list[dict[str, Any]]:
        """The connected participants of a live room (API representation)."""
        ar = self.rooms.get(room_id)
        if ar is None:
            return []
        out = []
        for p in ar.room.participants.values():
            out.append(
                {
                    "identity": p.identity,
                    "joined_at": p.joined_at,
                    "can_publish": p.grant.can_publish,
                    "can_subscribe": p.grant.can_subscribe,
                    "tracks": [
                        sig.TrackDesc(t.track_id, t.kind, t.source, t.muted).to_dict()
                        for t in p.tracks.values()
                    ],
                }
            )
        return out

    def room_status(self, room_id: str) -> RoomStatus | None:
        ar = self.rooms.get(room_id)
        return ar.room.status if ar else None
