"""Typed RTMP messages: protocol control, user control, AMF0 commands and data.

Each message is a frozen dataclass with `parse(payload)` (raises `ProtocolError`)
and `__bytes__()` (the message payload, without chunk framing) plus its
`TYPE_ID`. Audio and video messages are not wrapped here: their payload goes
straight to `ingest.flv` without an intermediate object (hot path).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ingest.rtmp import amf0
from ingest.rtmp.errors import ProtocolError

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")


class MessageType(enum.IntEnum):
    SET_CHUNK_SIZE = 1
    ABORT = 2
    ACKNOWLEDGEMENT = 3
    USER_CONTROL = 4
    WINDOW_ACK_SIZE = 5
    SET_PEER_BANDWIDTH = 6
    AUDIO = 8
    VIDEO = 9
    DATA_AMF3 = 15
    SHARED_OBJECT_AMF3 = 16
    COMMAND_AMF3 = 17
    DATA_AMF0 = 18
    SHARED_OBJECT_AMF0 = 19
    COMMAND_AMF0 = 20
    AGGREGATE = 22


class UserControlEvent(enum.IntEnum):
    STREAM_BEGIN = 0
    STREAM_EOF = 1
    STREAM_DRY = 2
    SET_BUFFER_LENGTH = 3
    STREAM_IS_RECORDED = 4
    PING_REQUEST = 6
    PING_RESPONSE = 7


def _u32(payload: bytes | bytearray | memoryview, what: str) -> int:
    if len(payload) < 4:
        raise ProtocolError(f"{what}: payload of {len(payload)} bytes, need 4")
    return int(_U32.unpack_from(payload, 0)[0])


@dataclass(frozen=True, slots=True)
class SetChunkSize:
    TYPE_ID: ClassVar[int] = MessageType.SET_CHUNK_SIZE
    size: int

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> SetChunkSize:
        size = _u32(payload, "SetChunkSize") & 0x7FFFFFFF
        if size < 1:
            raise ProtocolError("SetChunkSize: chunk size 0")
        return cls(size)

    def __bytes__(self) -> bytes:
        return _U32.pack(self.size & 0x7FFFFFFF)


@dataclass(frozen=True, slots=True)
class Abort:
    TYPE_ID: ClassVar[int] = MessageType.ABORT
    chunk_stream_id: int

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> Abort:
        return cls(_u32(payload, "Abort"))

    def __bytes__(self) -> bytes:
        return _U32.pack(self.chunk_stream_id)


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    TYPE_ID: ClassVar[int] = MessageType.ACKNOWLEDGEMENT
    sequence_number: int
    """Bytes received so far (mod 2**32)."""

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> Acknowledgement:
        return cls(_u32(payload, "Acknowledgement"))

    def __bytes__(self) -> bytes:
        return _U32.pack(self.sequence_number & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class WindowAckSize:
    TYPE_ID: ClassVar[int] = MessageType.WINDOW_ACK_SIZE
    size: int

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> WindowAckSize:
        return cls(_u32(payload, "WindowAckSize"))

    def __bytes__(self) -> bytes:
        return _U32.pack(self.size)


@dataclass(frozen=True, slots=True)
class SetPeerBandwidth:
    TYPE_ID: ClassVar[int] = MessageType.SET_PEER_BANDWIDTH
    size: int
    limit_type: int = 2
    """0 hard, 1 soft, 2 dynamic."""

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> SetPeerBandwidth:
        size = _u32(payload, "SetPeerBandwidth")
        return cls(size, payload[4] if len(payload) > 4 else 2)

    def __bytes__(self) -> bytes:
        return _U32.pack(self.size) + bytes((self.limit_type,))


@dataclass(frozen=True, slots=True)
class UserControl:
    TYPE_ID: ClassVar[int] = MessageType.USER_CONTROL
    event: int
    value: int
    """Stream id, or the ping timestamp."""
    extra: int | None = None
    """Buffer length in ms for SET_BUFFER_LENGTH."""

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> UserControl:
        if len(payload) < 6:
            raise ProtocolError(f"UserControl: payload of {len(payload)} bytes")
        event = _U16.unpack_from(payload, 0)[0]
        value = _U32.unpack_from(payload, 2)[0]
        extra = _U32.unpack_from(payload, 6)[0] if len(payload) >= 10 else None
        return cls(event, value, extra)

    def __bytes__(self) -> bytes:
        out = _U16.pack(self.event) + _U32.pack(self.value & 0xFFFFFFFF)
        if self.extra is not None:
            out += _U32.pack(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class Command:
    """An AMF0 command: `name`, transaction id, command object, then arguments."""

    TYPE_ID: ClassVar[int] = MessageType.COMMAND_AMF0
    name: str
    transaction_id: float
    command_object: Any = None
    args: tuple[Any, ...] = field(default=())

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview, *, amf3: bool = False) -> Command:
        body = payload[1:] if amf3 and len(payload) and payload[0] == 0 else payload
        values = amf0.decode_all(body)
        if len(values) < 2 or not isinstance(values[0], str):
            raise ProtocolError("command: expected a name and a transaction id")
        tid = values[1]
        if not isinstance(tid, float):
            raise ProtocolError("command: transaction id is not a number")
        obj = values[2] if len(values) > 2 else None
        return cls(values[0], tid, obj, tuple(values[3:]))

    def __bytes__(self) -> bytes:
        return amf0.encode(self.name, self.transaction_id, self.command_object, *self.args)


@dataclass(frozen=True, slots=True)
class Data:
    """An AMF0 data message such as `@setDataFrame`/`onMetaData`."""

    TYPE_ID: ClassVar[int] = MessageType.DATA_AMF0
    values: tuple[Any, ...]

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview, *, amf3: bool = False) -> Data:
        body = payload[1:] if amf3 and len(payload) and payload[0] == 0 else payload
        return cls(tuple(amf0.decode_all(body)))

    @property
    def name(self) -> str:
        return self.values[0] if self.values and isinstance(self.values[0], str) else ""

    def __bytes__(self) -> bytes:
        return amf0.encode(*self.values)


ControlMessage = (
    SetChunkSize | Abort | Acknowledgement | WindowAckSize | SetPeerBandwidth | UserControl
)
