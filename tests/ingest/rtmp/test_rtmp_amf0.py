"""AMF0 values: round trips, the wire bytes of common values, and hostile input."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.rtmp import amf0
from ingest.rtmp.amf0 import UNDEFINED, AmfDate, EcmaArray
from ingest.rtmp.errors import ProtocolError


@pytest.mark.parametrize(
    "value",
    [
        0.0,
        -1.5,
        1e300,
        True,
        False,
        "",
        "live",
        "ünïcödé ✓",
        None,
        UNDEFINED,
        {"app": "live", "nested": {"a": [1.0, "x", None]}},
        EcmaArray(width=1280.0, height=720.0, encoder="obs"),
        [1.0, 2.0, [3.0, {"k": False}]],
        AmfDate(1700000000000.0, 0),
        "x" * 70000,  # long string
    ],
)
def test_round_trip(value: Any) -> None:
    data = amf0.encode(value)
    decoded, used = amf0.decode(data)
    assert used == len(data)
    assert decoded == value
    assert type(decoded) is type(value) or isinstance(value, int | float)


def test_wire_format_of_a_connect_command() -> None:
    assert amf0.encode("connect") == b"\x02\x00\x07connect"
    assert amf0.encode(1.0) == b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
    assert amf0.encode({"a": True}) == b"\x03\x00\x01a\x01\x01\x00\x00\x09"
    assert amf0.encode(EcmaArray()) == b"\x08\x00\x00\x00\x00\x00\x00\x09"
    assert amf0.encode(None, UNDEFINED) == b"\x05\x06"
    assert amf0.encode("x" * 70000)[:5] == b"\x0c\x00\x01\x11\x70"


def test_decode_all_reads_a_sequence() -> None:
    data = amf0.encode("_result", 1.0, None, {"code": "ok"})
    assert amf0.decode_all(data) == ["_result", 1.0, None, {"code": "ok"}]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00",  # truncated number
        b"\x02\x00\x05ab",  # string longer than the data
        b"\x03\x00\x01a",  # object without value / end
        b"\x0a\xff\xff\xff\xff",  # strict array claiming 4G items
        b"\x09",  # object end outside an object
        b"\x07\x00\x01",  # reference: unsupported
        b"\x11\x02",  # AMF3 switch: unsupported
        b"\x0c\x7f\xff\xff\xff",  # long string longer than the data
    ],
)
def test_malformed_input_raises_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        amf0.decode_all(data)


def test_nesting_depth_is_limited() -> None:
    deep = b"\x0a\x00\x00\x00\x01" * 100 + b"\x05"
    with pytest.raises(ProtocolError):
        amf0.decode_all(deep)


def test_property_count_is_limited() -> None:
    body = b"".join(b"\x00\x02k" + bytes((i // 256 % 256, i % 256)) + b"\x05" for i in range(5000))
    with pytest.raises(ProtocolError):
        amf0.decode_all(b"\x03" + body + b"\x00\x00\x09")


amf_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(min_size=1, max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(amf_values)
def test_round_trip_property(value: Any) -> None:
    decoded, _ = amf0.decode(amf0.encode(value))
    assert decoded == value


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_protocol_error(data: bytes) -> None:
    try:
        amf0.decode_all(data)
    except ProtocolError:
        pass
