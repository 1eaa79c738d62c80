"""The asyncio RTMP server: sockets, deadlines and back-pressure around `RtmpSession`.

Owns the I/O side of RTMP ingest. One `RtmpConnection` (an
`asyncio.BufferedProtocol`, no task per connection) per TCP peer feeds the
sans-IO session and acts on its events:

* `Publish` → pause reading, `await authority.authorize_publish(key,
  protocol="rtmp", remote=...)`; denied → `onStatus` BadName/Rejected and close;
  granted → `NetStream.Publish.Start`, then wait (bounded by
  `RtmpLimits.track_wait`) for the sequence headers, then
  `hub.publish(live_stream_id, tracks, source="rtmp", on_close=...)`.
* Audio/video → `ingest.flv.FlvDemuxer` → `Publication.write(MediaUnit)`.
  A changed sequence header mid-stream starts a new generation.
* Disconnect → `publication.close("disconnected")`; the hub closing the
  publication (takeover by another publisher, kick) drops the socket.
* A `ProtocolError` closes that connection only; `UnsupportedMedia` first tells
  the publisher why (onStatus NetStream.Publish.Rejected).

Read coalescing: while a publication runs, SO_RCVLOWAT asks the kernel to wake
us only once about `RtmpLimits.read_coalesce` seconds of the stream's bytes are
queued, so one read carries several frames. The rate leaves keyframes out: a
keyframe is a burst (a third of a GOP's bytes is common), and the frames after
it are small, so a batch sized on the mean rate took 0.3 s to fill after each
keyframe. A keyframe is never held back: while one is partly read the low-water
mark is what completes it (it opens a segment and every viewer's join point). A
shared timer undoes coalescing for a connection that went quiet (its rate
fell), so no batch is held back for long, and it is off while a `prompt` reader
(a WebRTC viewer) watches the stream.

Reads land in one receive buffer shared by every connection of the server: the
session copies out what it keeps before the next read can come, and a buffer
reused read after read stays in the CPU's caches and is never page-faulted in
again, where a fresh `bytes` per read (asyncio.Protocol) costs both.

Deadlines: the client must reach `publish` within `handshake_timeout`, and send
something at least every `idle_timeout`. Memory per connection is bounded by
the chunk limits, the pre-publication buffer and the write buffer cap.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

from ingest.conn_limits import ConnectionLimits
from ingest.flv import FlvDemuxer
from ingest.hub import Hub, MediaUnit, Publication, TrackKind, describe_tracks
from ingest.ports import PublishAuthority, PublishDenied, mask_stream_key
from ingest.rtmp.chunk import ChunkLimits
from ingest.rtmp.errors import ProtocolError, UnsupportedMedia
from ingest.rtmp.publishing import PublishAction, PublishState, publish_transition
from ingest.rtmp.session import (
    AudioData,
    Closed,
    Connect,
    HandshakeDone,
    MetaData,
    Publish,
    RtmpSession,
    State,
    Unpublish,
    VideoData,
)

log = logging.getLogger("onair.ingest.rtmp")

STATUS_BAD_NAME = "NetStream.Publish.BadName"
STATUS_REJECTED = "NetStream.Publish.Rejected"


@dataclass(frozen=True, slots=True)
class RtmpLimits:
    handshake_timeout: float = 10.0
    """Seconds from TCP accept to the `publish` command."""
    idle_timeout: float = 30.0
    """Seconds without a byte from the peer before it is dropped."""
    track_wait: float = 2.0
    """After a publish is granted, most seconds to wait for all sequence headers."""
    max_connections: int = 1000
    max_connections_per_client: int = 50
    """Connections one address (IPv6: /64) may hold, handshakes included."""
    chunk: ChunkLimits = field(default_factory=ChunkLimits)
    max_command_size: int = 64 * 1024
    max_buffered_units: int = 600
    """Media units held between the grant and the start of the publication..."""
    max_buffered_bytes: int = 32 << 20
    """...and their bytes (the oldest go first)."""
    max_write_buffer: int = 1 << 20
    """Bytes queued to a peer that does not read before it is dropped."""
    apps: frozenset[str] = frozenset({"live"})
    linger: float = 1.0
    """Seconds a refused peer has to read our error status before we close."""
    read_coalesce: float = 0.1
    """While publishing, let the kernel gather about this many seconds of the
    stream's bytes before waking us (SO_RCVLOWAT, from the byte rate of the last
    ~2 s, re-measured every half second; 0 turns it off). Fewer, larger reads:
    a wake-up of the event loop costs far more than the frames it carries, so
    this is most of the CPU per stream, for about this much added latency."""
    coalesce_stale: float = 0.5
    """A coalescing connection that has woken us for this long gets SO_RCVLOWAT 1
    (its byte rate fell: the kernel would hold a short batch back); checked by a
    shared timer every `coalesce_stale` seconds."""


_RECEIVE_BUFFER = 256 * 1024
"""Bytes one read may bring (asyncio.Protocol's own read size)."""


class RtmpConnection(asyncio.BufferedProtocol):
    """One RTMP peer. Attributes are read by the server and by metrics."""

    def __init__(self, server: RtmpServer) -> None:
        self.server = server
        limits = server.limits
        self.limits = limits
        self.session = RtmpSession(
            apps=limits.apps, chunk_limits=limits.chunk, max_command_size=limits.max_command_size
        )
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.remote_ip = ""
        self.stream_key = ""
        self.live_stream_id: str | None = None
        self.publication: Publication | None = None
        self.demux: FlvDemuxer | None = None
        self.bytes_in = 0
        self.close_reason = ""
        self._loop = asyncio.get_running_loop()
        self._last_rx = self._loop.time()
        self._opened = self._last_rx
        self._pending: deque[MediaUnit] = deque(maxlen=limits.max_buffered_units)
        self._pending_bytes = 0
        self.state = PublishState.IDLE
        """Where the publish stands (`ingest.rtmp.publishing`)."""
        self.publications = 0
        """Publications this connection started (a changed codec starts another)."""
        self._write_paused = False
        self._auth_task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._track_timer: asyncio.TimerHandle | None = None
        self._sock: Any = None
        self._lowat = 1
        """SO_RCVLOWAT as set."""
        self._batch = 1
        """The low-water mark the byte rate asks for (`_lowat` is lower while a
        keyframe is partly read)."""
        self._key_bytes = 0
        """Bytes of video keyframes received, left out of the rate."""
        self._rate_marks: deque[tuple[float, int]] = deque([(self._last_rx, 0)], maxlen=5)
        """(time, bytes_in less keyframes) every half second: the byte rate of
        the frames between keyframes over the last ~2 s."""
        self._next_adapt = self._last_rx + 0.5

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so cast, not assert
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.remote_ip = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        server = self.server
        refused = len(server._connections) >= self.limits.max_connections
        if not refused and server.conn_limits is not None:
            refused = (
                server.conn_limits.admit(
                    transport,
                    self.remote_ip,
                    listener="rtmp",
                    per_client=self.limits.max_connections_per_client,
                )
                is not None
            )
        if refused:
            server.connections_refused += 1
            self._move(PublishAction.CLOSE)
            self.transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover
                pass
            self._sock = sock
        server._connections.add(self)
        server.connections_total += 1
        self._deadline = self._loop.call_later(self.limits.handshake_timeout, self._on_deadline)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server._receive_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.server._receive_buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        """Handle bytes from the peer; `data` is only valid during this call."""
        if self.state is PublishState.CLOSED:
            return
        n = len(data)
        self.bytes_in += n
        self.server.bytes_in += n
        now = self._last_rx = self._loop.time()
        if now >= self._next_adapt and self.publication is not None:
            self._adapt_read_size(now)
        try:
            self.session.receive_data(data)
            self._process()
        except UnsupportedMedia as exc:
            self._refuse_media(exc)
            return
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        if self._batch > 1:
            self._apply_batch()
        self._flush()

    def _apply_batch(self) -> None:
        """SO_RCVLOWAT to the batch, but while a keyframe is partly read no more
        than what completes it."""
        need = self.session.keyframe_wire_bytes()
        lowat = self._batch if need is None else min(self._batch, need)
        if lowat != self._lowat:
            self._set_lowat(lowat)

    def eof_received(self) -> bool | None:
        self.session.close("peer closed the connection")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        limits = self.server.conn_limits
        if self in self.server._connections and limits is not None and self.transport:
            limits.release(self.transport, self.remote_ip, listener="rtmp")
        self.server._connections.discard(self)
        self.server._coalescing.discard(self)
        self._move(PublishAction.CLOSE)
        for handle in (self._deadline, self._track_timer):
            if handle is not None:
                handle.cancel()
        if self._auth_task is not None and not self._auth_task.done():
            self._auth_task.cancel()
        if self.publication is not None:
            self.publication.close("disconnected")
        log.info(
            "rtmp %s closed (%s, %d bytes in)",
            self.remote,
            self.close_reason or "disconnected",
            self.bytes_in,
        )

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def _move(self, action: PublishAction) -> None:
        self.state = publish_transition(self.state, action)

    # -- events ---------------------------------------------------------------------

    def _process(self) -> None:
        session = self.session
        while self.state is not PublishState.AUTHORIZING:
            ev = session.next_event()
            if ev is None:
                return
            t = type(ev)
            if t is VideoData or t is AudioData:
                demux = self.demux
                if demux is None:  # media queued behind an unpublish
                    continue
                if t is VideoData:
                    unit = demux.video(ev.timestamp, ev.payload)  # type: ignore[union-attr]
                    if unit is not None and unit.keyframe:
                        self._key_bytes += len(unit.data)
                else:
                    unit = demux.audio(ev.timestamp, ev.payload)  # type: ignore[union-attr]
                pub = self.publication
                if unit is not None and pub is not None:
                    pub.write(unit)
                else:
                    self._on_media(unit)
            elif t is MetaData:
                assert isinstance(ev, MetaData)
                if self.demux is not None:
                    self.demux.set_metadata(ev.values)
                    self._maybe_start(None)
            elif t is Publish:
                assert isinstance(ev, Publish)
                self._on_publish(ev)
            elif t is Unpublish:
                self._end_publication("unpublished")
            elif t is Closed:
                assert isinstance(ev, Closed)
                self._close(ev.reason)
                return
            elif t is Connect:
                assert isinstance(ev, Connect)
                log.info(
                    "rtmp %s connect app=%s tcUrl=%s flashVer=%s",
                    self.remote,
                    ev.app,
                    ev.tc_url,
                    ev.flash_ver,
                )
            elif t is HandshakeDone:
                pass

    def _on_media(self, unit: MediaUnit | None) -> None:
        """Media before the publication starts, or a sequence header (unit None)."""
        demux = self.demux
        assert demux is not None
        if unit is None:
            pub = self.publication
            if pub is None:
                self._maybe_start(None)
            elif _configs(demux.tracks) != _configs(pub.tracks):
                self._republish()
            return
        pending = self._pending
        if len(pending) == pending.maxlen:
            self._pending_bytes -= len(pending[0].data)
        pending.append(unit)
        self._pending_bytes += len(unit.data)
        while self._pending_bytes > self.limits.max_buffered_bytes and len(pending) > 1:
            self._pending_bytes -= len(pending.popleft().data)
        self._maybe_start(unit)

    def _maybe_start(self, unit: MediaUnit | None) -> None:
        demux = self.demux
        if self.state is not PublishState.GRANTED or demux is None:
            return
        if not demux.tracks:
            return
        if (
            demux.ready
            or (demux.expect_video is None and demux.video_track and demux.audio_track)
            or (
                unit is not None
                and unit.kind is TrackKind.VIDEO
                and unit.keyframe
                and not (demux.expect_audio and demux.audio_track is None)
            )
            or (unit is not None and demux.expect_video is False)
        ):
            self._start_publication()

    def _on_track_deadline(self) -> None:
        self._track_timer = None
        if self.state is PublishState.GRANTED and self.demux is not None and self.demux.tracks:
            self._start_publication()

    def _start_publication(self) -> None:
        demux = self.demux
        assert demux is not None and self.live_stream_id is not None
        if self._track_timer is not None:
            self._track_timer.cancel()
            self._track_timer = None
        pub: Publication | None = None

        def on_close(reason: str) -> None:
            # our own ends (unpublish, new tracks) let go of the publication first
            if self.state is PublishState.CLOSED or pub is not self.publication:
                return
            self.close_reason = f"publication closed: {reason}"
            log.info(
                "rtmp %s stream %s: dropping publisher (%s)",
                self.remote,
                self.live_stream_id,
                reason,
            )
            self._abort()

        pub = self.server.hub.publish(
            self.live_stream_id, demux.tracks, source="rtmp", on_close=on_close
        )
        self.publication = pub
        self._move(PublishAction.START)
        self.publications += 1
        if self.publications == 1:
            self.server.publishes += 1
        log.info(
            "rtmp %s stream %s: publishing generation %d, tracks %s",
            self.remote,
            self.live_stream_id,
            pub.generation,
            describe_tracks(pub.tracks),
        )
        pending = self._pending
        self._pending_bytes = 0
        has_video = demux.video_track is not None
        seen_key = not has_video
        while pending:
            unit = pending.popleft()
            if not seen_key and unit.kind is TrackKind.VIDEO:
                if not unit.keyframe:
                    continue
                seen_key = True
            pub.write(unit)

    def _republish(self) -> None:
        """A changed sequence header: a new generation with the new tracks (the
        hub hands the stream over from the old publication to the new one)."""
        self.publication = None
        self._move(PublishAction.RESTART)
        self._start_publication()

    def _end_publication(self, reason: str) -> None:
        pub, self.publication = self.publication, None
        if pub is not None:
            pub.close(reason)
        self._move(PublishAction.END)
        self.demux = None
        self._batch = 1
        if self._lowat != 1:
            self._set_lowat(1)  # commands again: answer them at once
        self._pending.clear()
        self._pending_bytes = 0

    def _on_publish(self, ev: Publish) -> None:
        self.stream_key = ev.stream_key
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = self._loop.call_later(self.limits.idle_timeout, self._on_deadline)
        if not ev.stream_key:
            self.server.rejected_bad_key += 1
            self.session.reject_publish(STATUS_BAD_NAME, "empty stream key")
            return
        self._move(PublishAction.PUBLISH)
        self._update_reading()
        self._auth_task = self._loop.create_task(self._authorize(ev))

    async def _authorize(self, ev: Publish) -> None:
        server = self.server
        try:
            grant = await server.authority.authorize_publish(
                ev.stream_key, protocol="rtmp", remote=self.remote
            )
        except PublishDenied as denied:
            if denied.code == "bad_key":
                server.rejected_bad_key += 1
                code = STATUS_BAD_NAME
            else:
                server.rejected_disabled += 1
                code = STATUS_REJECTED
            log.info(
                "rtmp %s publish %r denied: %s (%s)",
                self.remote,
                mask_stream_key(ev.stream_key),
                denied.code,
                denied.message,
            )
            self._reject(code, denied.message or denied.code)
            return
        except Exception:
            log.exception("rtmp %s: authorize_publish failed", self.remote)
            server.rejected_other += 1
            self._reject(STATUS_REJECTED, "internal error, try again later")
            return
        if self.state is PublishState.CLOSED or self.session.state is not State.PUBLISH_PENDING:
            return  # the peer went away while we asked
        self.live_stream_id = grant.live_stream_id
        self.demux = FlvDemuxer()
        self._move(PublishAction.GRANT)
        self._track_timer = self._loop.call_later(self.limits.track_wait, self._on_track_deadline)
        self._update_reading()
        try:
            self.session.accept_publish()
            self._process()
        except UnsupportedMedia as exc:
            self._refuse_media(exc)
            return
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        self._flush()

    def _reject(self, code: str, description: str) -> None:
        if self.state is PublishState.CLOSED or self.session.state is not State.PUBLISH_PENDING:
            return
        self._move(PublishAction.DENY)
        self.session.reject_publish(code, description)
        self._process()  # → Closed → flush and close

    # -- closing and I/O -----------------------------------------------------------

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.state is PublishState.CLOSED:
            return
        now = self._loop.time()
        if not self.stream_key:
            self.server.timeouts += 1
            self.close_reason = "no publish within the handshake timeout"
            self._abort()
            return
        idle = now - self._last_rx
        if idle >= self.limits.idle_timeout and self.state is not PublishState.AUTHORIZING:
            self.server.timeouts += 1
            self.close_reason = f"idle for {idle:.0f}s"
            self._abort()
            return
        delay = max(0.5, self._last_rx + self.limits.idle_timeout - now)
        self._deadline = self._loop.call_later(delay, self._on_deadline)

    def _adapt_read_size(self, now: float) -> None:
        """Set SO_RCVLOWAT to ~`read_coalesce` seconds of the stream's recent byte rate."""
        marks = self._rate_marks
        since, bytes_then = marks[0]
        between_keys = self.bytes_in - self._key_bytes
        marks.append((now, between_keys))
        self._next_adapt = now + 0.5
        coalesce = self.limits.read_coalesce
        if coalesce <= 0 or self._sock is None or now - since < 0.4:
            return
        rate = (between_keys - bytes_then) / (now - since)
        lowat = min(65536, int(rate * coalesce))
        pub = self.publication
        if lowat < 512 or (pub is not None and pub.stream.wants_prompt):
            # a trickle: batching it saves nothing worth the wait; or a WebRTC
            # viewer is watching, to whom every frame is due at once
            lowat = 1
        if abs(lowat - self._batch) * 4 > self._batch:
            self._batch = lowat
            self._apply_batch()

    def _set_lowat(self, lowat: int) -> None:
        self._lowat = lowat
        if self._sock is not None:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, lowat)
            except OSError:  # pragma: no cover - not supported: reads stay as they are
                self._sock = None
                return
        if lowat > 1:
            self.server._watch_coalescing(self)
        else:
            self.server._coalescing.discard(self)

    def _check_coalescing(self, now: float) -> bool:
        """Called by the server's shared timer; False once this connection no longer
        coalesces. Gone quiet while holding out for a batch: wake on every byte."""
        if self.state is PublishState.CLOSED or self._lowat <= 1:
            return False
        if now - self._last_rx >= self.limits.coalesce_stale:
            self._batch = 1
            self._set_lowat(1)
            # measure afresh: the old rate is what overestimated the batch
            self._rate_marks.clear()
            self._rate_marks.append((now, self.bytes_in - self._key_bytes))
            self._next_adapt = now + 0.5
            return False
        return True

    def _update_reading(self) -> None:
        t = self.transport
        if t is None or self.state is PublishState.CLOSED or t.is_closing():
            return
        if self.state is PublishState.AUTHORIZING or self._write_paused:
            t.pause_reading()
        else:
            t.resume_reading()

    def _flush(self) -> None:
        data = self.session.data_to_send()
        t = self.transport
        if data and t is not None and not t.is_closing():
            t.write(data)
            self.server.bytes_out += len(data)
            if t.get_write_buffer_size() > self.limits.max_write_buffer:
                self.close_reason = "peer does not read"
                self._abort()

    def _protocol_error(self, exc: ProtocolError) -> None:
        self.server.protocol_errors += 1
        self.close_reason = f"protocol error: {exc}"
        log.warning("rtmp %s: protocol error, closing: %s", self.remote, exc)
        self._abort()

    def _refuse_media(self, exc: UnsupportedMedia) -> None:
        self.server.rejected_media += 1
        log.warning("rtmp %s stream %s: refusing media: %s", self.remote, self.live_stream_id, exc)
        self.session.fail(STATUS_REJECTED, str(exc))
        self._close(f"unsupported media: {exc}")

    def _close(self, reason: str) -> None:
        """Flush what the session has to say, then close once the peer had time to
        read it: incoming bytes are discarded meanwhile (closing at once would make
        the peer's kernel see a reset and drop our last status unread)."""
        if not self.close_reason:
            self.close_reason = reason
        self._flush()
        self._move(PublishAction.CLOSE)
        if self.publication is not None:
            self.publication.close("disconnected")
        t = self.transport
        if t is not None and not t.is_closing():
            t.resume_reading()
            self._loop.call_later(self.limits.linger, self._linger_done)

    def _linger_done(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.close()

    def _abort(self) -> None:
        self._move(PublishAction.CLOSE)
        self.session.close(self.close_reason or "aborted")
        t = self.transport
        if t is not None:
            t.abort()

    def abort(self, reason: str) -> None:
        """Drop this peer now (server shutdown)."""
        if not self.close_reason:
            self.close_reason = reason
        self._abort()


def _configs(tracks: Any) -> tuple[Any, ...]:
    return tuple((t.kind, t.config) for t in tracks)


class RtmpServer:
    """RTMP ingest listener. Publishers' media goes to `hub`; `authority` checks keys."""

    def __init__(
        self,
        hub: Hub,
        authority: PublishAuthority,
        *,
        host: str,
        port: int,
        limits: RtmpLimits | None = None,
        conn_limits: ConnectionLimits | None = None,
        tls: ssl.SSLContext | None = None,
        tls_port: int | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.hub = hub
        self.tls = tls
        """RTMPS: asyncio's TLS in front of the same RTMP sessions, on `tls_port`."""
        self._requested_tls_port = tls_port
        self.reuse_port = reuse_port
        """Share the ports with other processes (the workers of one machine)."""
        self.tls_port: int | None = None
        """The bound RTMPS port, valid after `start()` when `tls` is given."""
        self._tls_server: asyncio.Server | None = None
        self.conn_limits = conn_limits
        """The node's caps on accepted sockets, shared with the HTTP listener."""
        self.authority = authority
        self.host = host
        self._requested_port = port
        self.port = port
        """The bound port (the OS's pick when 0 was given), valid after `start()`."""
        self.limits = limits or RtmpLimits()
        self._server: asyncio.Server | None = None
        self._connections: set[RtmpConnection] = set()
        self._coalescing: set[RtmpConnection] = set()
        """Connections reading with SO_RCVLOWAT > 1, watched by `_coalesce_timer`."""
        self._coalesce_timer: asyncio.TimerHandle | None = None
        self._receive_buffer = memoryview(bytearray(_RECEIVE_BUFFER))
        """Every connection's reads land here (see the module docstring)."""
        # Counters (metrics read them as plain attributes).
        self.bytes_in = 0
        self.bytes_out = 0
        self.connections_total = 0
        self.connections_refused = 0
        """Refused because `max_connections` were open."""
        self.publishes = 0
        self.rejected_bad_key = 0
        self.rejected_disabled = 0
        self.rejected_other = 0
        self.rejected_media = 0
        self.protocol_errors = 0
        self.timeouts = 0

    @property
    def connections(self) -> tuple[RtmpConnection, ...]:
        return tuple(self._connections)

    @property
    def rejections(self) -> int:
        return (
            self.rejected_bad_key
            + self.rejected_disabled
            + self.rejected_other
            + self.rejected_media
        )

    def stats(self) -> dict[str, int]:
        return {
            "connections": len(self._connections),
            "connections_total": self.connections_total,
            "connections_refused": self.connections_refused,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "publishes": self.publishes,
            "rejected_bad_key": self.rejected_bad_key,
            "rejected_disabled": self.rejected_disabled,
            "rejected_other": self.rejected_other,
            "rejected_media": self.rejected_media,
            "protocol_errors": self.protocol_errors,
            "timeouts": self.timeouts,
        }

    def _watch_coalescing(self, conn: RtmpConnection) -> None:
        self._coalescing.add(conn)
        self._arm_coalesce_timer()

    def _arm_coalesce_timer(self) -> None:
        if self._coalesce_timer is None and self._coalescing:
            self._coalesce_timer = asyncio.get_running_loop().call_later(
                self.limits.coalesce_stale, self._on_coalesce_timer
            )

    def _on_coalesce_timer(self) -> None:
        self._coalesce_timer = None
        now = asyncio.get_running_loop().time()
        for conn in list(self._coalescing):
            if not conn._check_coalescing(now):
                self._coalescing.discard(conn)
        self._arm_coalesce_timer()

    @property
    def connection_count(self) -> int:
        """Peers connected now (handshaking, publishing or lingering)."""
        return len(self._connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: RtmpConnection(self),
            self.host,
            self._requested_port,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            backlog=512,
        )
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        log.info("rtmp listening on %s:%d", self.host, self.port)
        if self.tls is not None and self._requested_tls_port is not None:
            self._tls_server = await loop.create_server(
                lambda: RtmpConnection(self),
                self.host,
                self._requested_tls_port,
                ssl=self.tls,
                ssl_handshake_timeout=self.limits.handshake_timeout,
                reuse_address=True,
                reuse_port=self.reuse_port or None,
                backlog=512,
            )
            self.tls_port = int(self._tls_server.sockets[0].getsockname()[1])
            log.info("rtmps listening on %s:%d", self.host, self.tls_port)

    async def stop(self) -> None:
        tls_server, self._tls_server = self._tls_server, None
        if tls_server is not None:
            tls_server.close()
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        if self._coalesce_timer is not None:
            self._coalesce_timer.cancel()
            self._coalesce_timer = None
        for conn in list(self._connections):
            conn.abort("server stopping")
        await server.wait_closed()
        if tls_server is not None:
            await tls_server.wait_closed()
        await asyncio.sleep(0)
