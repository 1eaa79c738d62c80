"""ISO BMFF box writing helpers (ISO/IEC 14496-12), struct-packed, no I/O.

Owns the byte-level primitives the CMAF init and fragment writers build on:
plain boxes, full boxes (version + flags), fixed-point numbers and the unity
transformation matrix. Everything returns `bytes`; nothing here knows codecs.
"""

from __future__ import annotations

import struct

UNITY_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
"""The identity transformation matrix of tkhd/mvhd (16.16 and 2.30 fixed point)."""


def box(box_type: bytes, *payload: bytes) -> bytes:
    """A box: 32-bit size, 4-char type, payload (64-bit size when it would not fit)."""
    if len(box_type) != 4:
        raise ValueError(f"box type must be 4 bytes: {box_type!r}")
    body = b"".join(payload)
    size = 8 + len(body)
    if size > 0xFFFFFFFF:
        return struct.pack(">I4sQ", 1, box_type, size + 8) + body
    return struct.pack(">I4s", size, box_type) + body


def full_box(box_type: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A FullBox: a box whose payload starts with an 8-bit version and 24-bit flags."""
    return box(box_type, struct.pack(">I", (version << 24) | (flags & 0xFFFFFF)), *payload)


def u8(v: int) -> bytes:
    return struct.pack(">B", v)


def u16(v: int) -> bytes:
    return struct.pack(">H", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


def s32(v: int) -> bytes:
    return struct.pack(">i", v)


def fixed16_16(v: float) -> bytes:
    return struct.pack(">I", round(v * 65536) & 0xFFFFFFFF)


def fixed8_8(v: float) -> bytes:
    return struct.pack(">H", round(v * 256) & 0xFFFF)


def language_code(lang: str = "und") -> bytes:
    """ISO-639-2/T packed as three 5-bit letters (mdhd)."""
    if len(lang) != 3:
        lang = "und"
    v = 0
    for ch in lang.lower():
        v = (v << 5) | ((ord(ch) - 0x60) & 0x1F)
    return u16(v)


def iter_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """Top-level boxes in data[start:end] as (type, payload_start, box_end).

    A tiny reader used by tests and by code that needs to find boxes in its own
    output; raises ValueError on a truncated or malformed box.
    """
    out: list[tuple[bytes, int, int]] = []
    pos = start
    stop = len(data) if end is None else end
    while pos < stop:
        if pos + 8 > stop:
            raise ValueError("truncated box header")
        size, typ = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > stop:
                raise ValueError("truncated large box header")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = stop - pos
        if size < header or pos + size > stop:
            raise ValueError(f"bad box size {size} for {typ!r}")
        out.append((typ, pos + header, pos + size))
        pos += size
    return out
