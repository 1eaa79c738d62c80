"""A thin ctypes binding over the system's libsrt (Haivision SRT 1.5).

Owns loading the library and the few calls an SRT listener needs: sockets,
options, bind/listen/accept, the listen callback (where a caller is accepted
or refused before any media flows), receiving, the reject reason and stats.
Nothing of the protocol is reimplemented here: handshakes, retransmission,
encryption and TSBPD are libsrt's.

ctypes releases the GIL around every foreign call, so a thread blocked in
`srt_accept` or `srt_recvmsg` does not hold up the event loop; the listen
callback runs on one of libsrt's own threads and takes the GIL for its
Python body.

Debian ships the library as `libsrt1.5-gnutls` (which its ffmpeg links) or
`libsrt1.5-openssl`; either works, the API is the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import socket
import struct
import threading
from collections.abc import Callable

SRTSOCKET = ctypes.c_int32
INVALID_SOCK = -1
SRT_ERROR = -1

# SRT_SOCKOPT (srt.h)
SRTO_SNDSYN = 1
SRTO_RCVSYN = 2
SRTO_RCVTIMEO = 14
SRTO_REUSEADDR = 15
SRTO_STATE = 17
SRTO_LATENCY = 23
SRTO_PASSPHRASE = 26
SRTO_PBKEYLEN = 27
SRTO_RCVLATENCY = 43
SRTO_PEERLATENCY = 44
SRTO_STREAMID = 46
SRTO_PAYLOADSIZE = 49
SRTO_TRANSTYPE = 50
SRTO_ENFORCEDENCRYPTION = 53
SRTO_PEERIDLETIMEO = 55

SRTT_LIVE = 0
LOG_CRIT = 2

# SRT_SOCKSTATUS
SRTS_CONNECTED = 5
SRTS_BROKEN = 6
SRTS_CLOSED = 8
SRTS_NONEXIST = 9

# error codes (SRT_EMN(major, minor) = 1000 * major + minor)
SRT_ECONNLOST = 2001
SRT_ENOCONN = 2002
SRT_EINVSOCK = 5004
SRT_EASYNCRCV = 6002

# reject reasons a listener may give (access_control.h): 1000 + an HTTP-like code
REJX_KEY_NOTSUP = 1001
REJX_BAD_REQUEST = 1400
REJX_UNAUTHORIZED = 1401
REJX_FORBIDDEN = 1403
REJX_BAD_MODE = 1405
REJX_NOTSUP_MEDIA = 1415
REJX_ISE = 1500
REJX_DOWN = 1503

LIVE_PAYLOAD = 1316
"""Bytes of one live-mode message: seven MPEG-TS packets."""

LISTEN_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,
    SRTSOCKET,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_char_p,
)
"""int (*)(void* opaque, SRTSOCKET ns, int hsversion, const sockaddr* peer, const char* streamid)"""

_NAMES = ("srt-gnutls", "srt-openssl", "srt")
_SONAMES = ("libsrt-gnutls.so.1.5", "libsrt-openssl.so.1.5", "libsrt.so.1.5")


class SrtError(OSError):
    """A libsrt call failed; `code` is libsrt's error number."""

    def __init__(self, call: str, code: int, message: str) -> None:
        super().__init__(f"{call}: {message} (srt error {code})")
        self.call = call
        self.code = code


class LibSrtMissing(RuntimeError):
    """No libsrt 1.5 on this machine (apt-get install libsrt1.5-gnutls)."""


class _Stats(ctypes.Structure):
    # the head of SRT_TRACEBSTATS; only these fields are read
    _fields_ = [
        ("msTimeStamp", ctypes.c_int64),
        ("pktSentTotal", ctypes.c_int64),
        ("pktRecvTotal", ctypes.c_int64),
        ("pktSndLossTotal", ctypes.c_int),
        ("pktRcvLossTotal", ctypes.c_int),
        ("pktRetransTotal", ctypes.c_int),
        ("pktSentACKTotal", ctypes.c_int),
        ("pktRecvACKTotal", ctypes.c_int),
        ("pktSentNAKTotal", ctypes.c_int),
        ("pktRecvNAKTotal", ctypes.c_int),
        ("usSndDurationTotal", ctypes.c_int64),
        ("pktSndDropTotal", ctypes.c_int),
        ("pktRcvDropTotal", ctypes.c_int),
        ("pktRcvUndecryptTotal", ctypes.c_int),
        ("byteSentTotal", ctypes.c_uint64),
        ("byteRecvTotal", ctypes.c_uint64),
        ("byteRcvLossTotal", ctypes.c_uint64),
    ]


_STATS_SIZE = 2048
"""Bytes handed to srt_bstats: more than SRT_TRACEBSTATS in any 1.5 release."""


class LibSrt:
    """The loaded library. One per process (`libsrt()`); started once."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        lib.srt_startup.restype = ctypes.c_int
        lib.srt_cleanup.restype = ctypes.c_int
        lib.srt_create_socket.restype = SRTSOCKET
        lib.srt_create_socket.argtypes = []
        lib.srt_bind.argtypes = [SRTSOCKET, ctypes.c_void_p, ctypes.c_int]
        lib.srt_listen.argtypes = [SRTSOCKET, ctypes.c_int]
        lib.srt_accept.restype = SRTSOCKET
        lib.srt_accept.argtypes = [SRTSOCKET, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        lib.srt_listen_callback.argtypes = [SRTSOCKET, LISTEN_CALLBACK, ctypes.c_void_p]
        lib.srt_close.argtypes = [SRTSOCKET]
        lib.srt_getsockname.argtypes = [SRTSOCKET, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        lib.srt_getpeername.argtypes = [SRTSOCKET, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
        lib.srt_setsockflag.argtypes = [SRTSOCKET, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        lib.srt_getsockflag.argtypes = [
            SRTSOCKET,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.srt_recvmsg.argtypes = [SRTSOCKET, ctypes.c_char_p, ctypes.c_int]
        lib.srt_getlasterror.argtypes = [ctypes.POINTER(ctypes.c_int)]
        lib.srt_getlasterror_str.restype = ctypes.c_char_p
        lib.srt_clearlasterror.restype = None
        lib.srt_getsockstate.argtypes = [SRTSOCKET]
        lib.srt_setrejectreason.argtypes = [SRTSOCKET, ctypes.c_int]
        lib.srt_getrejectreason.argtypes = [SRTSOCKET]
        lib.srt_rejectreason_str.restype = ctypes.c_char_p
        lib.srt_rejectreason_str.argtypes = [ctypes.c_int]
        lib.srt_bstats.argtypes = [SRTSOCKET, ctypes.c_void_p, ctypes.c_int]
        lib.srt_getversion.restype = ctypes.c_uint32
        lib.srt_setloglevel.argtypes = [ctypes.c_int]
        lib.srt_setloglevel.restype = None
        self._started = 0
        self._lock = threading.Lock()

    # -- the library ----------------------------------------------------------
    @property
    def version(self) -> str:
        v = int(self._lib.srt_getversion())
        return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}"

    def startup(self) -> None:
        """Start libsrt's threads; counted, so each `startup` needs a `cleanup`."""
        with self._lock:
            if self._started == 0:
                # libsrt logs every refused handshake and closed socket to
                # stderr; the server logs what matters itself
                self._lib.srt_setloglevel(LOG_CRIT)
                if self._lib.srt_startup() < 0:
                    self._raise("srt_startup")
            self._started += 1

    def cleanup(self) -> None:
        with self._lock:
            self._started -= 1
            if self._started == 0:
                self._lib.srt_cleanup()

    def _raise(self, call: str) -> None:
        code = int(self._lib.srt_getlasterror(None))
        message = (self._lib.srt_getlasterror_str() or b"").decode("utf-8", "replace")
        raise SrtError(call, code, message)

    def last_error(self) -> int:
        return int(self._lib.srt_getlasterror(None))

    # -- sockets --------------------------------------------------------------
    def create_socket(self) -> int:
        sock = int(self._lib.srt_create_socket())
        if sock == INVALID_SOCK:
            self._raise("srt_create_socket")
        return sock

    def set_int(self, sock: int, opt: int, value: int) -> None:
        v = ctypes.c_int(value)
        if self._lib.srt_setsockflag(sock, opt, ctypes.byref(v), ctypes.sizeof(v)) < 0:
            self._raise(f"srt_setsockflag({opt})")

    def set_bool(self, sock: int, opt: int, value: bool) -> None:
        # SRT's boolean options take an int-sized value in 1.5's setsockflag
        self.set_int(sock, opt, 1 if value else 0)

    def set_str(self, sock: int, opt: int, value: str) -> None:
        raw = value.encode()
        if self._lib.srt_setsockflag(sock, opt, raw, len(raw)) < 0:
            self._raise(f"srt_setsockflag({opt})")

    def get_str(self, sock: int, opt: int, size: int = 512) -> str:
        buf = ctypes.create_string_buffer(size)
        n = ctypes.c_int(size)
        if self._lib.srt_getsockflag(sock, opt, buf, ctypes.byref(n)) < 0:
            self._raise(f"srt_getsockflag({opt})")
        return buf.raw[: n.value].decode("utf-8", "replace")

    def get_int(self, sock: int, opt: int) -> int:
        v = ctypes.c_int(0)
        n = ctypes.c_int(ctypes.sizeof(v))
        if self._lib.srt_getsockflag(sock, opt, ctypes.byref(v), ctypes.byref(n)) < 0:
            self._raise(f"srt_getsockflag({opt})")
        return v.value

    def bind(self, sock: int, host: str, port: int) -> None:
        raw = sockaddr(host, port)
        if self._lib.srt_bind(sock, raw, len(raw)) < 0:
            self._raise("srt_bind")

    def listen(self, sock: int, backlog: int) -> None:
        if self._lib.srt_listen(sock, backlog) < 0:
            self._raise("srt_listen")

    def listen_callback(self, sock: int, hook: Callable[..., int]) -> object:
        """Install `hook(opaque, ns, hsversion, peer, streamid) -> 0 | -1`; returns
        the C callback, which the caller must keep alive as long as the socket."""
        cb = LISTEN_CALLBACK(hook)
        if self._lib.srt_listen_callback(sock, cb, None) < 0:
            self._raise("srt_listen_callback")
        return cb

    def accept(self, sock: int) -> tuple[int, str]:
        """Block until a caller is connected; (socket, "host:port" of the peer)."""
        buf = ctypes.create_string_buffer(128)
        n = ctypes.c_int(128)
        ns = int(self._lib.srt_accept(sock, buf, ctypes.byref(n)))
        if ns == INVALID_SOCK:
            self._raise("srt_accept")
        return ns, format_sockaddr(buf.raw[: n.value])

    def sockname(self, sock: int) -> tuple[str, int]:
        buf = ctypes.create_string_buffer(128)
        n = ctypes.c_int(128)
        if self._lib.srt_getsockname(sock, buf, ctypes.byref(n)) < 0:
            self._raise("srt_getsockname")
        return parse_sockaddr(buf.raw[: n.value])

    def recv(self, sock: int, buf: ctypes.Array[ctypes.c_char]) -> int:
        """One message into `buf`; its length, or -1 (see `last_error`)."""
        return int(self._lib.srt_recvmsg(sock, buf, len(buf)))

    def close(self, sock: int) -> None:
        self._lib.srt_close(sock)

    def state(self, sock: int) -> int:
        return int(self._lib.srt_getsockstate(sock))

    def set_reject_reason(self, sock: int, code: int) -> None:
        self._lib.srt_setrejectreason(sock, code)

    def reject_reason(self, sock: int) -> int:
        return int(self._lib.srt_getrejectreason(sock))

    def stats(self, sock: int) -> dict[str, int]:
        """Totals since the connection began: packets and bytes received, lost,
        dropped (too late for TSBPD) and retransmitted."""
        raw = ctypes.create_string_buffer(_STATS_SIZE)
        if self._lib.srt_bstats(sock, raw, 0) < 0:
            return {}
        s = _Stats.from_buffer(raw)
        return {
            "packets_received": s.pktRecvTotal,
            "packets_lost": s.pktRcvLossTotal,
            "packets_dropped": s.pktRcvDropTotal,
            "packets_undecrypted": s.pktRcvUndecryptTotal,
            "bytes_received": s.byteRecvTotal,
        }


def sockaddr(host: str, port: int) -> bytes:
    """struct sockaddr_in / sockaddr_in6 (Linux layout) for `host`:`port`."""
    ip = ipaddress.ip_address(host or "0.0.0.0")
    if ip.version == 4:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + ip.packed + bytes(8)
    return (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!HI", port, 0)
        + ip.packed
        + struct.pack("=I", 0)
    )


def parse_sockaddr(raw: bytes) -> tuple[str, int]:
    if len(raw) < 8:
        return "", 0
    (family,) = struct.unpack_from("=H", raw)
    (port,) = struct.unpack_from("!H", raw, 2)
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[4:8])), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        return str(ipaddress.IPv6Address(raw[8:24])), port
    return "", 0


def format_sockaddr(raw: bytes) -> str:
    host, port = parse_sockaddr(raw)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sockaddr_at(address: int | None) -> bytes:
    """The sockaddr a C pointer points at (the listen callback's peer)."""
    if not address:
        return b""
    (family,) = struct.unpack("=H", ctypes.string_at(address, 2))
    return ctypes.string_at(address, 28 if family == socket.AF_INET6 else 16)


_loaded: LibSrt | None = None
_load_lock = threading.Lock()


def libsrt() -> LibSrt:
    """The process's libsrt, loaded on first use; `LibSrtMissing` without one."""
    global _loaded
    with _load_lock:
        if _loaded is not None:
            return _loaded
        for soname in _SONAMES:
            try:
                lib = ctypes.CDLL(soname)
                break
            except OSError:
                continue
        else:
            found = next(filter(None, map(ctypes.util.find_library, _NAMES)), None)
            if found is None:
                raise LibSrtMissing(
                    "libsrt 1.5 is not installed (Debian: apt-get install libsrt1.5-gnutls)"
                )
            lib = ctypes.CDLL(found)
        _loaded = LibSrt(lib)
        return _loaded


def available() -> bool:
    try:
        libsrt()
    except LibSrtMissing:
        return False
    return True
