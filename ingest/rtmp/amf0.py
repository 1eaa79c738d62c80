"""AMF0 encoding and decoding (the value format of RTMP commands and metadata).

Owns the mapping between AMF0 markers and Python values:

=================  =======================================
AMF0               Python
=================  =======================================
number             float
boolean            bool
string/long string str (long string chosen when > 65535 bytes)
object             dict[str, Any]
null               None
undefined          `UNDEFINED`
ECMA array         `EcmaArray` (a dict subclass)
strict array       list
date               `AmfDate`
=================  =======================================

Decoding is bounded: nesting depth and element counts are limited and every
length is checked against the remaining bytes, so hostile input raises
`ProtocolError` and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ingest.rtmp.errors import ProtocolError

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C

MAX_DEPTH = 16
MAX_ELEMENTS = 4096
"""Most keys/items one object or array may hold."""

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE_TZ = struct.Struct(">dh")


class _Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED = _Undefined()
"""The AMF0 `undefined` value (distinct from `None`, which is AMF0 `null`)."""


class EcmaArray(dict[str, Any]):
    """An AMF0 ECMA array (associative array); `onMetaData` usually is one."""


@dataclass(frozen=True, slots=True)
class AmfDate:
    milliseconds: float
    """Milliseconds since the Unix epoch, UTC."""
    timezone: int = 0


# -- decoding ----------------------------------------------------------------


def decode_all(data: bytes | bytearray | memoryview) -> list[Any]:
    """Every value in `data` (a command or data message body)."""
    dec = _Decoder(data)
    out: list[Any] = []
    while dec.pos < dec.end:
        out.append(dec.value(0))
    return out


def decode(data: bytes | bytearray | memoryview) -> tuple[Any, int]:
    """The first value of `data` and how many bytes it took."""
    dec = _Decoder(data)
    value = dec.value(0)
    return value, dec.pos


class _Decoder:
    __slots__ = ("buf", "end", "pos")

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.buf = bytes(data)
        self.pos = 0
        self.end = len(self.buf)

    def _need(self, n: int) -> int:
        pos = self.pos
        if pos + n > self.end:
            raise ProtocolError(f"AMF0: truncated value at byte {pos} (need {n})")
        self.pos = pos + n
        return pos

    def _str(self, n: int) -> str:
        pos = self._need(n)
        return self.buf[pos : pos + n].decode("utf-8", "replace")

    def _short_str(self) -> str:
        pos = self._need(2)
        return self._str(_U16.unpack_from(self.buf, pos)[0])

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ProtocolError("AMF0: nesting too deep")
        pos = self._need(1)
        marker = self.buf[pos]
        if marker == NUMBER:
            return _DOUBLE.unpack_from(self.buf, self._need(8))[0]
        if marker == BOOLEAN:
            return self.buf[self._need(1)] != 0
        if marker == STRING:
            return self._short_str()
        if marker == OBJECT:
            return self._properties({}, depth)
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == ECMA_ARRAY:
            self._need(4)  # the count is advisory; the object-end marker ends it
            return self._properties(EcmaArray(), depth)
        if marker == STRICT_ARRAY:
            count = _U32.unpack_from(self.buf, self._need(4))[0]
            if count > MAX_ELEMENTS or count > self.end - self.pos:
                raise ProtocolError(f"AMF0: strict array of {count} items")
            return [self.value(depth + 1) for _ in range(count)]
        if marker == DATE:
            ms, tz = _DATE_TZ.unpack_from(self.buf, self._need(10))
            return AmfDate(ms, tz)
        if marker == LONG_STRING:
            return self._str(_U32.unpack_from(self.buf, self._need(4))[0])
        if marker == OBJECT_END:
            raise ProtocolError("AMF0: object end marker outside an object")
        raise ProtocolError(f"AMF0: unsupported type marker 0x{marker:02x}")

    def _properties(self, out: dict[str, Any], depth: int) -> dict[str, Any]:
        buf = self.buf
        for _ in range(MAX_ELEMENTS + 1):
            key = self._short_str()
            if not key and self.pos < self.end and buf[self.pos] == OBJECT_END:
                self.pos += 1
                return out
            if len(out) >= MAX_ELEMENTS:
                break
            out[key] = self.value(depth + 1)
        raise ProtocolError("AMF0: object with too many properties")


# -- encoding ----------------------------------------------------------------


def encode(*values: Any) -> bytes:
    """AMF0 bytes for the values, one after another."""
    out = bytearray()
    for v in values:
        _encode(out, v, 0)
    return bytes(out)


def _encode_key(out: bytearray, key: str) -> None:
    raw = key.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("AMF0 property name too long")
    out += _U16.pack(len(raw))
    out += raw


def _encode(out: bytearray, v: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("AMF0: value nested too deep")
    if v is None:
        out.append(NULL)
    elif v is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(v, bool):
        out.append(BOOLEAN)
        out.append(1 if v else 0)
    elif isinstance(v, int | float):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(v))
    elif isinstance(v, str):
        raw = v.encode("utf-8")
        if len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        else:
            out.append(STRING)
            out += _U16.pack(len(raw))
        out += raw
    elif isinstance(v, AmfDate):
        out.append(DATE)
        out += _DATE_TZ.pack(v.milliseconds, v.timezone)
    elif isinstance(v, dict):
        if isinstance(v, EcmaArray):
            out.append(ECMA_ARRAY)
            out += _U32.pack(len(v))
        else:
            out.append(OBJECT)
        for key, item in v.items():
            _encode_key(out, str(key))
            _encode(out, item, depth + 1)
        out += b"\x00\x00\x09"
    elif isinstance(v, list | tuple):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(v))
        for item in v:
            _encode(out, item, depth + 1)
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as AMF0")
