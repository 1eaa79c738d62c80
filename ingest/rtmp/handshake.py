"""The server side of the RTMP handshake: C0 C1 C2 in, S0 S1 S2 out.

Two variants exist in the wild:

* the *simple* handshake of the RTMP spec: S1 is random, S2 echoes C1;
* the *digest* ("complex", FP9) handshake that librtmp, OBS and ffmpeg send: C1
  carries an HMAC-SHA256 digest keyed with the Flash Player key at one of two
  offset schemes. The server answers with S1 carrying its own digest (keyed with
  the Flash Media Server key, same scheme) and S2 signed with a key derived
  from the client's digest.

A C1 with a zero version field, or whose digest validates at neither scheme,
gets the simple handshake. C2 is read and not checked (as in nginx-rtmp).
Sans-IO: `receive_data()` consumes what it needs and returns the leftover.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass

from ingest.rtmp.errors import ProtocolError

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32

_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
GENUINE_FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
"""68 bytes; the first 36 key the server digest in S1, all 68 derive the S2 key."""
GENUINE_FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
"""62 bytes; the first 30 key the client digest in C1."""

SERVER_VERSION = bytes((0x0D, 0x0E, 0x0A, 0x0D))
"""What S1 announces as the server version (as nginx-rtmp does)."""


def _digest_offset(block: bytes | bytearray, scheme: int) -> int:
    """Offset of the 32-byte digest in a 1536-byte C1/S1 for scheme 0 or 1."""
    base = 8 if scheme == 0 else 772
    return (sum(block[base : base + 4]) % 728) + base + 4


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def find_client_digest(c1: bytes) -> tuple[int, bytes] | None:
    """The (scheme, digest) of a digest-handshake C1, or None if it has none."""
    if len(c1) != HANDSHAKE_SIZE:
        raise ProtocolError("C1 must be 1536 bytes")
    if c1[4:8] == b"\x00\x00\x00\x00":
        return None
    key = GENUINE_FP_KEY[:30]
    for scheme in (0, 1):
        off = _digest_offset(c1, scheme)
        digest = c1[off : off + DIGEST_SIZE]
        expected = _hmac(key, c1[:off] + c1[off + DIGEST_SIZE :])
        if hmac.compare_digest(digest, expected):
            return scheme, digest
    return None


def make_digest_block(key: bytes, scheme: int, head: bytes, rand: bytes) -> bytes:
    """A 1536-byte C1/S1 (`head` = time + version, 8 bytes) with its digest inserted."""
    block = bytearray(head + rand)
    off = _digest_offset(block, scheme)
    digest = _hmac(key, bytes(block[:off] + block[off + DIGEST_SIZE :]))
    block[off : off + DIGEST_SIZE] = digest
    return bytes(block)


def server_response(c1: bytes, *, now_ms: int | None = None, rand: bytes | None = None) -> bytes:
    """S0 S1 S2 for the given C1: the digest variant if C1 has a valid digest."""
    ts = struct.pack(">I", (int(time.time() * 1000) if now_ms is None else now_ms) & 0xFFFFFFFF)
    rnd = os.urandom(HANDSHAKE_SIZE - 8) if rand is None else rand
    found = find_client_digest(c1)
    if found is None:
        s1 = ts + b"\x00\x00\x00\x00" + rnd
        s2 = c1
    else:
        scheme, client_digest = found
        s1 = make_digest_block(GENUINE_FMS_KEY[:36], scheme, ts + SERVER_VERSION, rnd)
        s2_rand = os.urandom(HANDSHAKE_SIZE - DIGEST_SIZE)
        s2_key = _hmac(GENUINE_FMS_KEY, client_digest)
        s2 = s2_rand + _hmac(s2_key, s2_rand)
    return bytes((RTMP_VERSION,)) + s1 + s2


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    digest: bool
    """The client used the digest (FP9) handshake."""
    client_version: bytes
    """C1 bytes 4..8 (the Flash Player / client version, or zeros)."""


class ServerHandshake:
    """Consumes C0+C1 (answers S0+S1+S2) then C2. Feed bytes; read `data_to_send()`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._out = bytearray()
        self.result: HandshakeResult | None = None
        self.done = False

    def receive_data(self, data: bytes | bytearray | memoryview) -> bytes:
        """Consume handshake bytes; returns bytes past the end of C2 (chunk stream)."""
        if self.done:
            return bytes(data)
        self._buf += data
        if self.result is None:
            if len(self._buf) < 1:
                return b""
            version = self._buf[0]
            if version != RTMP_VERSION:
                # 6 = RTMPE (encrypted), 'G'/'P' = someone speaking HTTP at us.
                raise ProtocolError(f"unsupported RTMP version byte {version}")
            if len(self._buf) < 1 + HANDSHAKE_SIZE:
                return b""
            c1 = bytes(self._buf[1 : 1 + HANDSHAKE_SIZE])
            del self._buf[: 1 + HANDSHAKE_SIZE]
            self._out += server_response(c1)
            self.result = HandshakeResult(find_client_digest(c1) is not None, c1[4:8])
        if len(self._buf) < HANDSHAKE_SIZE:
            return b""
        rest = bytes(self._buf[HANDSHAKE_SIZE:])
        self._buf.clear()
        self.done = True
        return rest

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out


def client_hello(*, digest: bool, scheme: int = 0) -> bytes:
    """C0+C1 as a client sends it (tests and tools): simple, or digest at `scheme`."""
    ts = struct.pack(">I", int(time.time() * 1000) & 0xFFFFFFFF)
    rnd = os.urandom(HANDSHAKE_SIZE - 8)
    if not digest:
        return bytes((RTMP_VERSION,)) + ts + b"\x00\x00\x00\x00" + rnd
    version = bytes((0x80, 0x00, 0x07, 0x02))
    block = make_digest_block(GENUINE_FP_KEY[:30], scheme, ts + version, rnd)
    return bytes((RTMP_VERSION,)) + block


def verify_server_response(c1: bytes, s1: bytes, s2: bytes) -> bool:
    """What a digest client checks: S1's digest (FMS key) and S2's signature."""
    found = find_client_digest(c1)
    if found is None:
        return s2 == c1
    scheme, client_digest = found
    off = _digest_offset(s1, scheme)
    expected = _hmac(GENUINE_FMS_KEY[:36], s1[:off] + s1[off + DIGEST_SIZE :])
    if expected != s1[off : off + DIGEST_SIZE]:
        return False
    key = _hmac(GENUINE_FMS_KEY, client_digest)
    return _hmac(key, s2[:-DIGEST_SIZE]) == s2[-DIGEST_SIZE:]
