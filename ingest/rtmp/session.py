"""The sans-IO RTMP server connection: bytes in, events out, bytes to send out.

Owns the connection state machine of a *publishing* RTMP client, after h11's
`Connection`: the driver calls `receive_data(data)` (b"" at EOF), then pulls
`next_event()` until it returns None, and writes `data_to_send()` to the peer.
Publishing needs the driver's decision: after a `Publish` event the session
waits for `accept_publish()` or `reject_publish(code, text)`.

States (`State`) change only in `_transition`, which validates the move and
emits the one event that goes with it. Replies real clients wait for are sent
by the session itself: connect `_result` (NetConnection.Connect.Success,
fmsVer, capabilities, objectEncoding) preceded by Window Acknowledgement Size,
Set Peer Bandwidth and Set Chunk Size; `_result` for releaseStream, FCPublish
(plus `onFCPublish`) and createStream (with the stream id); `onStatus` for
publish (Start on accept; BadName/Rejected errors on reject); ping responses;
acknowledgements every window. Play is refused with `NetStream.Play.Failed`.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ingest.rtmp import amf0
from ingest.rtmp.chunk import ChunkLimits, ChunkReader, ChunkWriter, RawMessage
from ingest.rtmp.errors import ProtocolError
from ingest.rtmp.handshake import ServerHandshake
from ingest.rtmp.messages import (
    Acknowledgement,
    Command,
    Data,
    MessageType,
    SetChunkSize,
    SetPeerBandwidth,
    UserControl,
    UserControlEvent,
    WindowAckSize,
)

log = logging.getLogger("onair.ingest.rtmp")

# Chunk stream ids we send on.
CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_STATUS = 5


class State(enum.Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"
    """Handshake done, waiting for `connect`."""
    CONNECTED = "connected"
    PUBLISH_PENDING = "publish_pending"
    """`publish` received; the driver must accept or reject."""
    PUBLISHING = "publishing"
    CLOSED = "closed"


_ALLOWED: dict[State, frozenset[State]] = {
    State.HANDSHAKE: frozenset({State.CONNECTING, State.CLOSED}),
    State.CONNECTING: frozenset({State.CONNECTED, State.CLOSED}),
    State.CONNECTED: frozenset({State.PUBLISH_PENDING, State.CLOSED}),
    State.PUBLISH_PENDING: frozenset({State.PUBLISHING, State.CLOSED}),
    State.PUBLISHING: frozenset({State.CONNECTED, State.CLOSED}),
    State.CLOSED: frozenset(),
}


# -- events --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    digest: bool
    """The client used the digest (FP9) handshake."""


@dataclass(frozen=True, slots=True)
class Connect:
    app: str
    """Application name, query string and trailing slashes removed ("live")."""
    tc_url: str
    flash_ver: str
    object_encoding: float
    properties: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Publish:
    stream_key: str
    """The publish name without its query string: the stream key."""
    app: str
    publish_name: str
    """As the client sent it (may carry `?query`)."""
    publish_type: str
    stream_id: int


@dataclass(frozen=True, slots=True)
class MetaData:
    values: dict[str, Any]


# AudioData and VideoData come once per media message: plain slotted classes,
# as a frozen dataclass pays an object.__setattr__ per field (never hashed).
@dataclass(slots=True)
class AudioData:
    timestamp: int
    """RTMP milliseconds, 32 bits."""
    payload: bytes | bytearray
    """An FLV audio tag body."""


@dataclass(slots=True)
class VideoData:
    timestamp: int
    payload: bytes | bytearray
    """An FLV video tag body."""


@dataclass(frozen=True, slots=True)
class Unpublish:
    """FCUnpublish / deleteStream / closeStream while publishing."""

    command: str


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


Event = HandshakeDone | Connect | Publish | MetaData | AudioData | VideoData | Unpublish | Closed


# -- session -------------------------------------------------------------------


def _strip_app(app: str) -> str:
    return app.split("?", 1)[0].strip("/")


def status(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"level": level, "code": code, "description": description, **extra}


class RtmpSession:
    """One RTMP server connection, publish only."""

    def __init__(
        self,
        *,
        apps: frozenset[str] | None = None,
        chunk_limits: ChunkLimits | None = None,
        max_command_size: int = 64 * 1024,
        max_streams: int = 4,
        window_ack_size: int = 2_500_000,
        out_chunk_size: int = 4096,
    ) -> None:
        self.apps = apps
        self.state = State.HANDSHAKE
        self._handshake = ServerHandshake()
        self._reader = ChunkReader(chunk_limits)
        self._writer = ChunkWriter()
        self._events: deque[Event] = deque()
        self._out = bytearray()
        self._max_command_size = max_command_size
        self._max_streams = max_streams
        self._window = window_ack_size
        self._out_chunk_size = out_chunk_size
        self._peer_window = 0
        self._last_ack = 0
        self._next_stream_id = 1
        self._streams: set[int] = set()
        self.app = ""
        self.tc_url = ""
        self.object_encoding = 0.0
        self.publish: Publish | None = None
        self.bytes_received = 0
        self._held: list[RawMessage] = []
        self._held_bytes = 0
        self._max_held_bytes = (chunk_limits or ChunkLimits()).max_pending_bytes
        self.media_dropped = 0
        """Audio/video messages that arrived while not publishing."""

    # -- driver API ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def buffered_bytes(self) -> int:
        """Bytes the session holds for the peer (unparsed input, partial messages,
        messages held while a publish is pending)."""
        return self._reader.buffered + self._reader.pending_bytes + self._held_bytes

    def keyframe_wire_bytes(self) -> int | None:
        """At most how many more bytes complete the video keyframe now arriving
        (None: none is partial); see `ChunkReader.keyframe_remaining`."""
        left = self._reader.keyframe_remaining()
        return None if left is None else max(1, left - self._reader.buffered)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the peer; b"" means the peer closed. Raises ProtocolError."""
        if self.state is State.CLOSED:
            return
        if not data:
            self._transition(State.CLOSED, Closed("peer closed the connection"))
            return
        self.bytes_received += len(data)
        if self.state is State.HANDSHAKE:
            rest = self._handshake.receive_data(data)
            self._out += self._handshake.data_to_send()
            if not self._handshake.done:
                return
            result = self._handshake.result
            self._transition(State.CONNECTING, HandshakeDone(bool(result and result.digest)))
            if not rest:
                return
            data = rest
        msgs = self._reader.feed(data)
        if self.state is State.PUBLISH_PENDING:
            self._hold(msgs)
        else:
            self._handle(msgs)
        if self.state is State.CLOSED:
            return
        window = self._peer_window or self._window
        if self.bytes_received - self._last_ack >= window:
            self._last_ack = self.bytes_received
            self._send_control(Acknowledgement(self.bytes_received & 0xFFFFFFFF))

    def _handle(self, msgs: list[RawMessage]) -> None:
        events = self._events
        for i, msg in enumerate(msgs):
            t = msg.type_id
            if t == 9 or t == 8:
                if self.state is State.PUBLISHING:
                    events.append(
                        VideoData(msg.timestamp, msg.payload)
                        if t == 9
                        else AudioData(msg.timestamp, msg.payload)
                    )
                else:
                    self.media_dropped += 1
                continue
            self._on_message(msg)
            if self.state is State.PUBLISH_PENDING:
                # Hold the rest until the driver decides (h11-style pause).
                self._hold(msgs[i + 1 :])
                return
            if self.state is State.CLOSED:
                return

    def _hold(self, msgs: list[RawMessage]) -> None:
        for msg in msgs:
            self._held_bytes += len(msg.payload)
        self._held.extend(msgs)
        if self._held_bytes > self._max_held_bytes:
            raise ProtocolError("too much data sent before the publish was answered")

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def accept_publish(self) -> None:
        """Grant the pending publish: StreamBegin + onStatus NetStream.Publish.Start.
        Messages held since the `publish` are processed now (may raise ProtocolError)."""
        pub = self._require_pending()
        self._send_control(UserControl(UserControlEvent.STREAM_BEGIN, pub.stream_id))
        self._send_status(
            pub.stream_id,
            status(
                "status",
                "NetStream.Publish.Start",
                f"{pub.stream_key} is now published.",
                details=pub.stream_key,
            ),
        )
        self._transition(State.PUBLISHING, None)
        held, self._held, self._held_bytes = self._held, [], 0
        self._handle(held)

    def reject_publish(self, code: str, description: str) -> None:
        """Refuse the pending publish with an error onStatus (e.g. NetStream.Publish.BadName),
        then close. The code leads the description so that clients that only log the
        description (ffmpeg: "Server error: ...") still show it."""
        pub = self._require_pending()
        self._send_status(pub.stream_id, status("error", code, f"{code}: {description}"))
        self._held, self._held_bytes = [], 0
        self._transition(State.CLOSED, Closed(f"publish rejected: {code}"))

    def fail(self, code: str, description: str) -> None:
        """End a publishing session with an error onStatus (unsupported media...), then close."""
        if self.state is State.CLOSED:
            return
        sid = self.publish.stream_id if self.publish else 0
        self._send_status(sid, status("error", code, f"{code}: {description}"))
        self._transition(State.CLOSED, Closed(f"{code}: {description}"))

    def close(self, reason: str = "closed by server") -> None:
        if self.state is not State.CLOSED:
            self._transition(State.CLOSED, Closed(reason))

    # -- the state machine ----------------------------------------------------

    def _transition(self, to: State, event: Event | None) -> None:
        if to not in _ALLOWED[self.state]:
            what = type(event).__name__ if event is not None else to.value
            raise ProtocolError(f"{what} not allowed in state {self.state.value}")
        self.state = to
        if event is not None:
            self._events.append(event)

    def _require_pending(self) -> Publish:
        if self.state is not State.PUBLISH_PENDING or self.publish is None:
            raise RuntimeError(f"no publish pending (state {self.state.value})")
        return self.publish

    # -- incoming messages ---------------------------------------------------

    def _on_message(self, msg: RawMessage) -> None:
        t = msg.type_id
        if t == MessageType.COMMAND_AMF0 or t == MessageType.COMMAND_AMF3:
            self._check_size(msg)
            self._on_command(Command.parse(msg.payload, amf3=t == MessageType.COMMAND_AMF3), msg)
        elif t == MessageType.DATA_AMF0 or t == MessageType.DATA_AMF3:
            self._check_size(msg)
            self._on_data(Data.parse(msg.payload, amf3=t == MessageType.DATA_AMF3))
        elif t == MessageType.USER_CONTROL:
            uc = UserControl.parse(msg.payload)
            if uc.event == UserControlEvent.PING_REQUEST:
                self._send_control(UserControl(UserControlEvent.PING_RESPONSE, uc.value))
        elif t == MessageType.WINDOW_ACK_SIZE:
            size = WindowAckSize.parse(msg.payload).size
            self._peer_window = max(size, 4096)
        elif t == MessageType.AGGREGATE:
            if self.state is State.PUBLISHING:
                self._on_aggregate(msg)
            else:
                self.media_dropped += 1
        # Set chunk size and abort are applied by the chunk reader; acknowledgements,
        # set peer bandwidth and shared objects need nothing from a publish-only server.

    def _check_size(self, msg: RawMessage) -> None:
        if len(msg.payload) > self._max_command_size:
            raise ProtocolError(f"command/data message of {len(msg.payload)} bytes")

    def _on_command(self, cmd: Command, msg: RawMessage) -> None:
        name = cmd.name
        tid = cmd.transaction_id
        if name == "connect":
            self._on_connect(cmd)
        elif self.state is State.CONNECTING:
            raise ProtocolError(f"command {name!r} before connect")
        elif name == "releaseStream":
            self._send_command(Command("_result", tid, None, (amf0.UNDEFINED,)))
        elif name == "FCPublish":
            key = cmd.args[0] if cmd.args and isinstance(cmd.args[0], str) else ""
            started = status("status", "NetStream.Publish.Start", key)
            self._send_command(Command("onFCPublish", 0.0, None, (started,)))
            self._send_command(Command("_result", tid, None, (amf0.UNDEFINED,)))
        elif name == "createStream":
            if len(self._streams) >= self._max_streams:
                raise ProtocolError("too many createStream calls")
            sid = self._next_stream_id
            self._next_stream_id += 1
            self._streams.add(sid)
            self._send_command(Command("_result", tid, None, (float(sid),)))
        elif name == "publish":
            self._on_publish(cmd, msg.stream_id)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if self.state is State.PUBLISHING:
                self._transition(State.CONNECTED, Unpublish(name))
            if name == "deleteStream" and cmd.args and isinstance(cmd.args[0], float):
                self._streams.discard(int(cmd.args[0]))
        elif name in ("play", "play2"):
            self._send_status(
                msg.stream_id,
                status(
                    "error",
                    "NetStream.Play.Failed",
                    "NetStream.Play.Failed: playback over RTMP is not supported; "
                    "this server only accepts publishing (watch over HLS)",
                ),
            )
            self._transition(State.CLOSED, Closed("play is not supported"))
        elif name in (
            "_result",
            "_error",
            "onStatus",
            "_checkbw",
            "checkBandwidth",
            "getStreamLength",
            "receiveAudio",
            "receiveVideo",
            "pause",
            "seek",
        ):
            pass
        elif tid > 0:
            self._send_command(
                Command(
                    "_error",
                    tid,
                    None,
                    (status("error", "NetConnection.Call.Failed", f"unknown command {name}"),),
                )
            )

    def _on_connect(self, cmd: Command) -> None:
        if self.state is not State.CONNECTING:
            raise ProtocolError("connect sent twice")
        obj = cmd.command_object if isinstance(cmd.command_object, dict) else {}
        app = _strip_app(str(obj.get("app", "")))
        tc_url = str(obj.get("tcUrl", ""))
        enc = obj.get("objectEncoding", 0.0)
        self.object_encoding = float(enc) if isinstance(enc, float) else 0.0
        self.app = app
        self.tc_url = tc_url
        if self.apps is not None and app not in self.apps:
            self._send_command(
                Command(
                    "_error",
                    cmd.transaction_id,
                    None,
                    (
                        status(
                            "error",
                            "NetConnection.Connect.Rejected",
                            f"NetConnection.Connect.Rejected: unknown application {app!r}; "
                            f"publish to rtmp://host/{'|'.join(sorted(self.apps))}/<key>",
                        ),
                    ),
                )
            )
            self._transition(State.CLOSED, Closed(f"unknown application {app!r}"))
            return
        self._send_control(WindowAckSize(self._window))
        self._send_control(SetPeerBandwidth(self._window, 2))
        self._send_control(SetChunkSize(self._out_chunk_size))
        self._writer.chunk_size = self._out_chunk_size
        self._send_command(
            Command(
                "_result",
                cmd.transaction_id,
                {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                (
                    status(
                        "status",
                        "NetConnection.Connect.Success",
                        "Connection succeeded.",
                        objectEncoding=self.object_encoding,
                    ),
                ),
            )
        )
        flash_ver = obj.get("flashVer", obj.get("flashver", ""))
        self._transition(
            State.CONNECTED,
            Connect(app, tc_url, str(flash_ver), self.object_encoding, dict(obj)),
        )

    def _on_publish(self, cmd: Command, stream_id: int) -> None:
        if self.state is not State.CONNECTED:
            raise ProtocolError(f"publish in state {self.state.value}")
        name = cmd.args[0] if cmd.args and isinstance(cmd.args[0], str) else ""
        ptype = cmd.args[1] if len(cmd.args) > 1 and isinstance(cmd.args[1], str) else "live"
        self.publish = Publish(name.split("?", 1)[0], self.app, name, ptype, stream_id)
        self._transition(State.PUBLISH_PENDING, self.publish)

    def _on_data(self, data: Data) -> None:
        values = data.values
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if not values or values[0] != "onMetaData":
            return
        meta = next((v for v in values[1:] if isinstance(v, dict)), None)
        if meta is not None and self.state is State.PUBLISHING:
            self._events.append(MetaData(dict(meta)))

    def _on_aggregate(self, msg: RawMessage) -> None:
        """An aggregate message: FLV tags back to back (11-byte header, body, 4-byte size)."""
        body = msg.payload
        pos = 0
        first_ts: int | None = None
        end = len(body)
        while pos + 11 <= end:
            tag_type = body[pos]
            size = int.from_bytes(body[pos + 1 : pos + 4], "big")
            ts = int.from_bytes(body[pos + 4 : pos + 7], "big") | (body[pos + 7] << 24)
            start = pos + 11
            if start + size > end:
                raise ProtocolError("aggregate message: tag runs past the end")
            if first_ts is None:
                first_ts = ts
            stamp = (msg.timestamp + ts - first_ts) & 0xFFFFFFFF
            part = bytes(body[start : start + size])
            if tag_type == 9:
                self._events.append(VideoData(stamp, part))
            elif tag_type == 8:
                self._events.append(AudioData(stamp, part))
            pos = start + size + 4

    # -- outgoing --------------------------------------------------------------

    def _send_control(self, m: Any) -> None:
        self._out += self._writer.write(CSID_CONTROL, m.TYPE_ID, 0, 0, bytes(m))

    def _send_command(self, cmd: Command, stream_id: int = 0) -> None:
        self._out += self._writer.write(CSID_COMMAND, cmd.TYPE_ID, stream_id, 0, bytes(cmd))

    def _send_status(self, stream_id: int, info: dict[str, Any]) -> None:
        cmd = Command("onStatus", 0.0, None, (info,))
        self._out += self._writer.write(CSID_STATUS, cmd.TYPE_ID, stream_id, 0, bytes(cmd))
