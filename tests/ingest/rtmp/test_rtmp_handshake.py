"""The RTMP handshake: simple echo, and the digest (FP9) variant at both offset schemes."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from rtmpclient import FFMPEG_CAPTURE, GSTREAMER_CAPTURE

from ingest.rtmp.errors import ProtocolError
from ingest.rtmp.handshake import (
    GENUINE_FMS_KEY,
    GENUINE_FP_KEY,
    HANDSHAKE_SIZE,
    ServerHandshake,
    client_hello,
    find_client_digest,
    server_response,
    verify_server_response,
)


def _run(c0c1: bytes, extra: bytes = b"") -> tuple[bytes, bytes, ServerHandshake]:
    hs = ServerHandshake()
    assert hs.receive_data(c0c1) == b""
    out = hs.data_to_send()
    rest = hs.receive_data(os.urandom(HANDSHAKE_SIZE) + extra)
    assert hs.done
    return out, rest, hs


def test_simple_handshake_echoes_c1_in_s2() -> None:
    c0c1 = client_hello(digest=False)
    out, rest, hs = _run(c0c1)
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE
    assert out[0] == 3
    s1, s2 = out[1 : 1 + HANDSHAKE_SIZE], out[1 + HANDSHAKE_SIZE :]
    assert s1[4:8] == b"\x00\x00\x00\x00"
    assert s2 == c0c1[1:]
    assert hs.result is not None and not hs.result.digest
    assert rest == b""


@pytest.mark.parametrize("scheme", [0, 1])
def test_digest_handshake_signs_s1_and_s2(scheme: int) -> None:
    c0c1 = client_hello(digest=True, scheme=scheme)
    c1 = c0c1[1:]
    assert find_client_digest(c1) is not None
    out, _, hs = _run(c0c1)
    s1, s2 = out[1 : 1 + HANDSHAKE_SIZE], out[1 + HANDSHAKE_SIZE :]
    assert hs.result is not None and hs.result.digest
    assert verify_server_response(c1, s1, s2)
    assert s2 != c1


def test_digest_offsets_computed_independently() -> None:
    """Scheme 1 by hand: the digest sits at (sum(C1[772:776]) % 728) + 776."""
    c1 = client_hello(digest=True, scheme=1)[1:]
    off = sum(c1[772:776]) % 728 + 776
    expected = hmac.new(GENUINE_FP_KEY[:30], c1[:off] + c1[off + 32 :], hashlib.sha256).digest()
    assert c1[off : off + 32] == expected
    s = server_response(c1)
    s1, s2 = s[1:1537], s[1537:]
    soff = sum(s1[772:776]) % 728 + 776
    assert (
        s1[soff : soff + 32]
        == hmac.new(GENUINE_FMS_KEY[:36], s1[:soff] + s1[soff + 32 :], hashlib.sha256).digest()
    )
    key = hmac.new(GENUINE_FMS_KEY, c1[off : off + 32], hashlib.sha256).digest()
    assert s2[-32:] == hmac.new(key, s2[:-32], hashlib.sha256).digest()


def test_nonzero_version_without_valid_digest_falls_back_to_echo() -> None:
    c0c1 = bytearray(client_hello(digest=True))
    c0c1[100:140] = bytes(40)  # wreck whichever digest it had
    c0c1[800:840] = bytes(40)
    assert find_client_digest(bytes(c0c1[1:])) is None
    out, _, _ = _run(bytes(c0c1))
    assert out[1 + HANDSHAKE_SIZE :] == bytes(c0c1[1:])


def test_bytes_after_c2_are_returned_for_the_chunk_stream() -> None:
    _, rest, _ = _run(client_hello(digest=False), b"\x03chunk")
    assert rest == b"\x03chunk"


def test_byte_by_byte_delivery() -> None:
    data = client_hello(digest=True) + os.urandom(HANDSHAKE_SIZE) + b"xy"
    hs = ServerHandshake()
    rest = b""
    for i in range(len(data)):
        rest += hs.receive_data(data[i : i + 1])
    assert hs.done and rest == b"xy"
    assert len(hs.data_to_send()) == 1 + 2 * HANDSHAKE_SIZE


@pytest.mark.parametrize("first", [b"\x06", b"G", b"\x00"])
def test_other_versions_are_refused(first: bytes) -> None:
    with pytest.raises(ProtocolError):
        ServerHandshake().receive_data(first + bytes(10))


def test_captured_clients_handshakes() -> None:
    """ffmpeg sends a digest C1 (version 9.0.124.2); GStreamer's rtmp2sink a simple one."""
    ff = FFMPEG_CAPTURE.read_bytes()
    assert find_client_digest(ff[1:1537]) is not None
    gst = GSTREAMER_CAPTURE.read_bytes()
    assert find_client_digest(gst[1:1537]) is None
