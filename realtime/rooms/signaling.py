"""The rooms signaling schema: JSON text messages over one WebSocket.

Every message is an object with a ``type``. Sans-IO: `parse_client` turns text
into a frozen message or raises `SignalingError` (the handler answers it with an
``error`` message and keeps the connection); `to_json` serialises any message.

Two peer connections per participant (see `peer`): ``pc: "publish"`` carries the
participant's own tracks to the server (the client offers), ``pc: "subscribe"``
carries everyone else's tracks to the client (the server offers, and offers
again whenever tracks come or go).

Client → server::

    {"type": "join", "auto_subscribe": true}
    {"type": "publish", "tracks": [{"mid": "0", "kind": "audio", "source": "microphone"}, ...]}
    {"type": "offer", "pc": "publish", "sdp": "..."}        (after publish)
    {"type": "answer", "pc": "subscribe", "sdp": "..."}     (to a server offer)
    {"type": "unpublish", "track_ids": ["TR_..."]}
    {"type": "subscribe", "track_ids": [...]}  /  {"type": "unsubscribe", "track_ids": [...]}
    {"type": "mute", "track_id": "TR_...", "muted": true}
    {"type": "leave"}

Server → client::

    {"type": "joined", "identity": "...", "room_id": "...", "participants": [Participant]}
    {"type": "participant_joined", "participant": Participant}
    {"type": "participant_left", "identity": "...",
     "reason": "left|disconnected|removed|replaced|room_closed"}
    {"type": "track_published", "identity": "...", "track": Track}
    {"type": "track_unpublished", "identity": "...", "track_id": "..."}
    {"type": "answer", "pc": "publish", "sdp": "..."}
    {"type": "offer", "pc": "subscribe", "sdp": "...",
     "tracks": [{"mid", "track_id", "identity", "kind"}]}
    {"type": "muted", "identity": "...", "track_id": "...", "muted": bool}
    {"type": "error", "code": "...", "message": "..."}

    Participant = {"identity": str, "tracks": [Track]}
    Track = {"track_id": str, "kind": "audio"|"video", "source": str, "muted": bool}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SDP_BYTES = 48 * 1024
MAX_TRACKS = 16
MAX_ID_LEN = 64

Kind = Literal["audio", "video"]
PcName = Literal["publish", "subscribe"]
SOURCES = ("camera", "microphone", "screen", "screen_audio", "unknown")


class SignalingError(Exception):
    """The peer sent something we refuse (the ProtocolError of signaling)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- shared pieces ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackSpec:
    """A track the client is about to offer on its publish PC."""

    mid: str
    kind: Kind
    source: str = "unknown"


@dataclass(frozen=True, slots=True)
class TrackDesc:
    track_id: str
    kind: Kind
    source: str
    muted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "kind": self.kind,
            "source": self.source,
            "muted": self.muted,
        }


@dataclass(frozen=True, slots=True)
class ParticipantDesc:
    identity: str
    tracks: tuple[TrackDesc, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "tracks": [t.to_dict() for t in self.tracks]}


@dataclass(frozen=True, slots=True)
class MidMapping:
    mid: str
    track_id: str
    identity: str
    kind: Kind

    def to_dict(self) -> dict[str, Any]:
        return {
            "mid": self.mid,
            "track_id": self.track_id,
            "identity": self.identity,
            "kind": self.kind,
        }


# -- client → server ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    auto_subscribe: bool = True
    type: Literal["join"] = "join"


@dataclass(frozen=True, slots=True)
class Publish:
    tracks: tuple[TrackSpec, ...]
    type: Literal["publish"] = "publish"


@dataclass(frozen=True, slots=True)
class Unpublish:
    track_ids: tuple[str, ...]
    type: Literal["unpublish"] = "unpublish"


@dataclass(frozen=True, slots=True)
class Subscribe:
    track_ids: tuple[str, ...]
    type: Literal["subscribe"] = "subscribe"


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    track_ids: tuple[str, ...]
    type: Literal["unsubscribe"] = "unsubscribe"


@dataclass(frozen=True, slots=True)
class Mute:
    track_id: str
    muted: bool
    type: Literal["mute"] = "mute"


@dataclass(frozen=True, slots=True)
class Leave:
    type: Literal["leave"] = "leave"


# -- both directions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offer:
    pc: PcName
    sdp: str
    tracks: tuple[MidMapping, ...] = ()
    """Server offers only: which mid carries which participant's track."""
    type: Literal["offer"] = "offer"


@dataclass(frozen=True, slots=True)
class Answer:
    pc: PcName
    sdp: str
    type: Literal["answer"] = "answer"


# -- server → client -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Joined:
    identity: str
    room_id: str
    participants: tuple[ParticipantDesc, ...]
    can_publish: bool = True
    can_subscribe: bool = True
    type: Literal["joined"] = "joined"


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    participant: ParticipantDesc
    type: Literal["participant_joined"] = "participant_joined"


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    identity: str
    reason: str
    type: Literal["participant_left"] = "participant_left"


@dataclass(frozen=True, slots=True)
class TrackPublished:
    identity: str
    track: TrackDesc
    type: Literal["track_published"] = "track_published"


@dataclass(frozen=True, slots=True)
class TrackUnpublished:
    identity: str
    track_id: str
    type: Literal["track_unpublished"] = "track_unpublished"


@dataclass(frozen=True, slots=True)
class Muted:
    identity: str
    track_id: str
    muted: bool
    type: Literal["muted"] = "muted"


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str
    type: Literal["error"] = "error"


@dataclass(frozen=True, slots=True)
class Moved:
    """The room is hosted elsewhere from now on: reconnect through `url` (the
    base URL of a server that reaches it)."""

    url: str
    type: Literal["moved"] = "moved"


ClientMessage = Join | Publish | Unpublish | Subscribe | Unsubscribe | Mute | Leave | Offer | Answer
ServerMessage = (
    Joined
    | ParticipantJoined
    | ParticipantLeft
    | TrackPublished
    | TrackUnpublished
    | Muted
    | Error
    | Moved
    | Offer
    | Answer
)
Message = ClientMessage | ServerMessage


# -- serialisation ------------------------------------------------------------------------


def to_dict(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"type": msg.type}
    for name in msg.__dataclass_fields__:
        if name == "type":
            continue
        value = getattr(msg, name)
        if isinstance(value, tuple):
            value = [v.to_dict() if hasattr(v, "to_dict") else v for v in value]
        elif hasattr(value, "to_dict"):
            value = value.to_dict()
        out[name] = value
    return out


def to_json(msg: Message) -> str:
    return json.dumps(to_dict(msg), separators=(",", ":"))


# -- parsing ----------------------------------------------------------------------------------


def _bad(message: str) -> SignalingError:
    return SignalingError("bad_message", message)


def _only(obj: dict[str, Any], allowed: set[str]) -> None:
    extra = set(obj) - allowed - {"type"}
    if extra:
        raise _bad(f"unknown field(s): {', '.join(sorted(extra))}")


def _str(obj: dict[str, Any], name: str, *, max_len: int = MAX_ID_LEN) -> str:
    v = obj.get(name)
    if not isinstance(v, str) or not v:
        raise _bad(f"'{name}' must be a non-empty string")
    if len(v.encode()) > max_len:
        raise _bad(f"'{name}' is too long")
    return v


def _bool(obj: dict[str, Any], name: str, default: bool | None = None) -> bool:
    v = obj.get(name, default)
    if not isinstance(v, bool):
        raise _bad(f"'{name}' must be a boolean")
    return v


def _kind(v: Any) -> Kind:
    if v == "audio":
        return "audio"
    if v == "video":
        return "video"
    raise _bad("'kind' must be 'audio' or 'video'")


def _pc(obj: dict[str, Any]) -> PcName:
    v = obj.get("pc")
    if v == "publish":
        return "publish"
    if v == "subscribe":
        return "subscribe"
    raise _bad("'pc' must be 'publish' or 'subscribe'")


def _track_ids(obj: dict[str, Any]) -> tuple[str, ...]:
    v = obj.get("track_ids")
    if not isinstance(v, list) or not v or len(v) > 64:
        raise _bad("'track_ids' must be a non-empty list (at most 64)")
    for t in v:
        if not isinstance(t, str) or not t or len(t) > MAX_ID_LEN:
            raise _bad("'track_ids' must hold non-empty strings")
    return tuple(v)


def _sdp(obj: dict[str, Any]) -> str:
    sdp = _str(obj, "sdp", max_len=MAX_SDP_BYTES)
    if not sdp.startswith("v=0"):
        raise _bad("'sdp' is not an SDP document")
    return sdp


def parse_client(text: str | bytes) -> ClientMessage:
    """Parse one client message; raise `SignalingError` for anything malformed."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise _bad("message is not UTF-8") from None
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        raise SignalingError("message_too_large", f"message exceeds {MAX_MESSAGE_BYTES} bytes")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise _bad("message is not JSON") from None
    if not isinstance(obj, dict):
        raise _bad("message must be a JSON object")
    kind = obj.get("type")
    if kind == "join":
        _only(obj, {"auto_subscribe"})
        return Join(auto_subscribe=_bool(obj, "auto_subscribe", True))
    if kind == "publish":
        _only(obj, {"tracks"})
        tracks = obj.get("tracks")
        if not isinstance(tracks, list) or not tracks or len(tracks) > MAX_TRACKS:
            raise _bad(f"'tracks' must be a non-empty list (at most {MAX_TRACKS})")
        specs = []
        for t in tracks:
            if not isinstance(t, dict):
                raise _bad("each track must be an object")
            _only(t, {"mid", "kind", "source"})
            source = t.get("source", "unknown")
            if source not in SOURCES:
                raise _bad(f"'source' must be one of {', '.join(SOURCES)}")
            specs.append(TrackSpec(_str(t, "mid"), _kind(t.get("kind")), source))
        if len({s.mid for s in specs}) != len(specs):
            raise _bad("track mids must be distinct")
        return Publish(tuple(specs))
    if kind == "unpublish":
        _only(obj, {"track_ids"})
        return Unpublish(_track_ids(obj))
    if kind == "subscribe":
        _only(obj, {"track_ids"})
        return Subscribe(_track_ids(obj))
    if kind == "unsubscribe":
        _only(obj, {"track_ids"})
        return Unsubscribe(_track_ids(obj))
    if kind == "mute":
        _only(obj, {"track_id", "muted"})
        return Mute(_str(obj, "track_id"), _bool(obj, "muted"))
    if kind == "leave":
        _only(obj, set())
        return Leave()
    if kind == "offer":
        _only(obj, {"pc", "sdp"})
        pc = _pc(obj)
        if pc != "publish":
            raise _bad("clients offer only on the 'publish' pc")
        return Offer(pc, _sdp(obj))
    if kind == "answer":
        _only(obj, {"pc", "sdp"})
        pc = _pc(obj)
        if pc != "subscribe":
            raise _bad("clients answer only on the 'subscribe' pc")
        return Answer(pc, _sdp(obj))
    if not isinstance(kind, str):
        raise _bad("'type' is missing")
    raise SignalingError("unknown_type", f"unknown message type {kind[:32]!r}")
