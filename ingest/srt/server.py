"""The SRT listener: MPEG-TS publishers over SRT (libsrt) into the hub.

Owns the SRT side of ingest, after the RTMP server's shape:

* One listener socket (`ONAIR_SRT_PORT`, live mode, the configured receive
  latency and passphrase). libsrt calls `_on_listen` on its own thread for
  every caller *during the handshake*: the streamid is read
  (`ingest.srt.streamid`) and the stream key is put to the publish authority
  on the event loop (`run_coroutine_threadsafe`, bounded by `auth_timeout`).
  A wrong key, a disabled stream, a draining server or a streamid that asks
  to play is refused there, with an SRT reject reason (1401, 1403, 1503,
  1405...), before any media flows.
* An accept thread hands each accepted caller to an `SrtConnection`, whose
  own thread reads SRT messages and demuxes them with PyAV
  (`av.open(..., format="mpegts")`); `ts_media.TsMedia` turns the packets into
  hub media, which reaches the event loop with `call_soon_threadsafe`. The
  publication (`hub.publish(..., source="srt")`) starts once every track is
  known and writes from the first keyframe; new parameter sets start a new
  generation, the end of the connection closes it ("disconnected").
* The hub closing the publication (a takeover, a kick from the API) closes the
  SRT socket, which ends the reading thread.

The event loop never calls into libsrt (it might wait on a lock held by the
thread running our listen callback, which waits on the loop): closes go
through the default executor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av

from ingest.hub import Hub, MediaUnit, Publication, TrackInfo, TrackKind, describe_tracks
from ingest.media_error import MediaError
from ingest.ports import PublishAuthority, PublishDenied, PublishGrant, mask_stream_key
from ingest.srt import libsrt as srt
from ingest.srt.streamid import StreamIdError, parse_streamid
from ingest.srt.ts_media import TS_CLOCK, TsMedia

log = logging.getLogger("onair.ingest.srt")

RECV_WAKE_MS = 500

_DENIED_REASON = {
    "bad_key": srt.REJX_UNAUTHORIZED,
    "disabled": srt.REJX_FORBIDDEN,
    "draining": srt.REJX_DOWN,
}


@dataclass(frozen=True, slots=True)
class SrtLimits:
    latency_ms: int = 120
    """Receiver latency (SRTO_RCVLATENCY): how long lost packets may take to be
    retransmitted. The larger of this and the caller's own wins."""
    passphrase: str | None = None
    """When set, callers must encrypt with it (10 to 79 characters)."""
    max_connections: int = 200
    auth_timeout: float = 3.0
    """Seconds the handshake may wait for the stream key's check."""
    peer_idle_timeout_ms: int = 5000
    """A caller silent this long is dropped (libsrt's default too)."""
    probe_size: int = 256 * 1024
    analyze_us: int = 500_000
    """How much of the stream PyAV reads before it names the tracks."""
    header_wait: float = 5.0
    header_bytes: int = 2 << 20
    """A caller must send an MPEG-TS program (PAT/PMT) within this many seconds
    and bytes: garbage would otherwise keep the demuxer searching for ever."""
    track_wait: float = 12.0
    """Seconds from the connection to the first keyframe with its parameter sets
    (OBS's default keyframe interval is 8.3 s)."""


class SrtServer:
    """Attributes are read by metrics and tests."""

    def __init__(
        self,
        hub: Hub,
        authority: PublishAuthority,
        *,
        host: str = "127.0.0.1",
        port: int = 9000,
        limits: SrtLimits | None = None,
    ) -> None:
        self.hub = hub
        self.authority = authority
        self.host = host
        self.port = port
        self.limits = limits or SrtLimits()
        self.connections: set[SrtConnection] = set()
        self.publishes = 0
        self.rejected_bad_key = 0
        self.rejected_disabled = 0
        self.rejected_other = 0
        self.refused_media = 0
        self._lib: srt.LibSrt | None = None
        self._listener = srt.INVALID_SOCK
        self._callback: object = None
        self._granted: dict[int, tuple[PublishGrant, str, str]] = {}
        self._granted_lock = threading.Lock()
        self._accept_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        lib = self._lib = srt.libsrt()
        lib.startup()
        try:
            sock = self._listener = lib.create_socket()
            lib.set_int(sock, srt.SRTO_TRANSTYPE, srt.SRTT_LIVE)
            lib.set_int(sock, srt.SRTO_RCVLATENCY, self.limits.latency_ms)
            lib.set_int(sock, srt.SRTO_PEERIDLETIMEO, self.limits.peer_idle_timeout_ms)
            if self.limits.passphrase:
                lib.set_str(sock, srt.SRTO_PASSPHRASE, self.limits.passphrase)
            lib.bind(sock, self.host, self.port)
            self.port = lib.sockname(sock)[1]
            self._callback = lib.listen_callback(sock, self._on_listen)
            lib.listen(sock, 64)
        except BaseException:
            await self._close_listener()
            lib.cleanup()
            raise
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="srt-accept", daemon=True
        )
        self._accept_thread.start()
        log.info("srt: listening on %s:%d (libsrt %s)", self.host, self.port, lib.version)

    async def close(self) -> None:
        if self._lib is None or self._closing:
            return
        self._closing = True
        await self._close_listener()
        if self._accept_thread is not None:
            await asyncio.to_thread(self._accept_thread.join, 5.0)
        conns = list(self.connections)
        for conn in conns:
            conn.kick("server closing")
        for conn in conns:
            await asyncio.to_thread(conn.join, 5.0)
        self._lib.cleanup()

    async def _close_listener(self) -> None:
        lib, sock = self._lib, self._listener
        self._listener = srt.INVALID_SOCK
        if lib is not None and sock != srt.INVALID_SOCK:
            await asyncio.to_thread(lib.close, sock)

    # -- handshake (libsrt's thread) --------------------------------------------
    def _on_listen(
        self, _opaque: Any, ns: int, hsversion: int, peer: int | None, streamid: bytes | None
    ) -> int:
        lib = self._lib
        assert lib is not None and self._loop is not None
        remote = srt.format_sockaddr(srt.sockaddr_at(peer))
        try:
            reason = self._admit(
                ns, hsversion, remote, (streamid or b"").decode("utf-8", "replace")
            )
        except BaseException:  # never let an exception cross into C
            log.exception("srt %s: listen callback failed", remote)
            reason = srt.REJX_ISE
        if reason:
            lib.set_reject_reason(ns, reason)
            return -1
        return 0

    def _admit(self, ns: int, hsversion: int, remote: str, streamid: str) -> int:
        """0 to accept the caller, else the reject reason."""
        assert self._loop is not None
        if self._closing:
            return srt.REJX_DOWN
        if hsversion < 5:
            self.rejected_other += 1
            return srt.REJX_BAD_REQUEST  # HSv4 callers cannot send a streamid
        try:
            sid = parse_streamid(streamid)
        except StreamIdError as exc:
            self.rejected_other += 1
            log.info("srt %s refused: %s", remote, exc)
            return exc.reason
        if len(self.connections) + len(self._granted) >= self.limits.max_connections:
            self.rejected_other += 1
            return 1402  # SRT_REJX_OVERLOAD
        future = asyncio.run_coroutine_threadsafe(
            self.authority.authorize_publish(sid.key, protocol="srt", remote=remote), self._loop
        )
        try:
            grant = future.result(self.limits.auth_timeout)
        except PublishDenied as denied:
            if denied.code == "bad_key":
                self.rejected_bad_key += 1
            elif denied.code == "disabled":
                self.rejected_disabled += 1
            else:
                self.rejected_other += 1
            log.info("srt %s publish %s denied: %s", remote, mask_stream_key(sid.key), denied.code)
            return _DENIED_REASON.get(denied.code, srt.REJX_FORBIDDEN)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self.rejected_other += 1
            log.warning(
                "srt %s: the stream key check took over %.1f s", remote, self.limits.auth_timeout
            )
            return srt.REJX_ISE
        except Exception:
            self.rejected_other += 1
            log.exception("srt %s: authorize_publish failed", remote)
            return srt.REJX_ISE
        with self._granted_lock:
            self._granted[ns] = (grant, remote, sid.key)
        return 0

    # -- accepting (the accept thread) ------------------------------------------
    def _accept_loop(self) -> None:
        lib = self._lib
        assert lib is not None and self._loop is not None
        while not self._closing:
            try:
                ns, remote = lib.accept(self._listener)
            except srt.SrtError as exc:
                if not self._closing:
                    log.warning("srt: accept failed, listener stops: %s", exc)
                return
            with self._granted_lock:
                granted = self._granted.pop(ns, None)
            if granted is None or self._closing:
                lib.close(ns)
                continue
            grant, peer, key = granted
            try:
                # wake the reader now and then: a caller that connects and
                # sends nothing readable is dropped on time (`_check_progress`)
                lib.set_int(ns, srt.SRTO_RCVTIMEO, RECV_WAKE_MS)
            except srt.SrtError:
                lib.close(ns)
                continue
            conn = SrtConnection(self, ns, grant.live_stream_id, peer or remote, key)
            self._loop.call_soon_threadsafe(self.connections.add, conn)
            conn.start()

    def _forget(self, conn: SrtConnection) -> None:
        self.connections.discard(conn)


class SrtConnection:
    """One publisher. `run` is its thread; `_on_*` run on the event loop."""

    def __init__(self, server: SrtServer, sock: int, live_stream_id: str, remote: str, key: str):
        self.server = server
        self.sock = sock
        self.live_stream_id = live_stream_id
        self.remote = remote
        self.stream_key = key
        self.publication: Publication | None = None
        self.bytes_in = 0
        self.close_reason = ""
        self.publications = 0
        self._lib = server._lib
        self._loop = server._loop
        self._thread = threading.Thread(target=self.run, name=f"srt-{sock}", daemon=True)
        self._closed = threading.Event()
        self._seen_key = False
        self.opened_at = time.monotonic()
        self.header_read = False
        """The demuxer has found the MPEG-TS program."""
        self.tracks_known = False
        self.refusal = ""
        """Why the reader cut the stream off (set by `_SrtReader`)."""

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def kick(self, reason: str) -> None:
        """Drop the publisher (any thread): its socket closes, its thread ends."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.close_reason = self.close_reason or reason
        assert self._loop is not None and self._lib is not None
        self._loop.run_in_executor(None, self._lib.close, self.sock)

    def stats(self) -> dict[str, int]:
        assert self._lib is not None
        return self._lib.stats(self.sock)

    # -- the connection's thread ------------------------------------------------
    def run(self) -> None:
        assert self._loop is not None and self._lib is not None
        post = self._loop.call_soon_threadsafe
        reason = "disconnected"
        try:
            self._demux(post)
            if self.refusal:
                raise MediaError(self.refusal)
        except (av.error.FFmpegError, MediaError) as exc:
            reason = "bad media"
            why = self.refusal or str(exc)
            self.close_reason = self.close_reason or f"not a stream onair can take: {why}"
            self.server.refused_media += 1
            log.info("srt %s stream %s: refused media: %s", self.remote, self.live_stream_id, why)
        except Exception:
            reason = "error"
            log.exception("srt %s: reading failed", self.remote)
        finally:
            if not self._closed.is_set():
                self._closed.set()
                self._lib.close(self.sock)
            post(self._on_end, reason)

    def _demux(self, post: Callable[..., Any]) -> None:
        limits = self.server.limits
        reader = _SrtReader(self)
        with av.open(
            reader,
            mode="r",
            format="mpegts",
            options={
                "probesize": str(limits.probe_size),
                "analyzeduration": str(limits.analyze_us),
            },
        ) as container:
            self.header_read = True
            video = next((s for s in container.streams.video), None)
            audio = next((s for s in container.streams.audio), None)
            if video is not None and video.codec_context.name != "h264":
                raise MediaError(
                    f"video codec {video.codec_context.name} over SRT is not supported; "
                    "publish H.264"
                )
            if audio is not None and audio.codec_context.name != "aac":
                log.info(
                    "srt %s: %s audio ignored (publish AAC)", self.remote, audio.codec_context.name
                )
                audio = None
            if video is None and audio is None:
                raise MediaError("no H.264 video or AAC audio in the stream")
            for s in (video, audio):
                if (
                    s is not None
                    and s.time_base is not None
                    and s.time_base.denominator != TS_CLOCK
                ):
                    raise MediaError(f"time base {s.time_base} is not MPEG-TS's")
            media = TsMedia(video=video is not None, audio=audio is not None)
            started = False
            for packet in container.demux([s for s in (video, audio) if s is not None]):
                if self._closed.is_set():
                    return
                dts = packet.dts if packet.dts is not None else packet.pts
                if dts is None or packet.size == 0:
                    continue
                data = bytes(packet)
                if packet.stream is video:
                    pts = packet.pts if packet.pts is not None else dts
                    unit = media.video(dts, pts, data, bool(packet.is_keyframe))
                    units = [unit] if unit is not None else []
                else:
                    units = media.audio(packet.pts if packet.pts is not None else dts, data)
                if not started or media.config_changed:
                    tracks = media.tracks
                    if tracks is None:
                        continue
                    post(self._on_tracks, tracks)
                    started = self.tracks_known = True
                if units:
                    post(self._on_units, units)

    # -- the event loop ---------------------------------------------------------
    def _on_tracks(self, tracks: tuple[TrackInfo, ...]) -> None:
        if self._closed.is_set():
            return
        old, self.publication = self.publication, None
        if old is not None:
            old.close("new tracks")
        pub: Publication | None = None

        def on_close(reason: str) -> None:
            if pub is self.publication:
                self.close_reason = f"publication closed: {reason}"
                log.info(
                    "srt %s stream %s: dropping publisher (%s)",
                    self.remote,
                    self.live_stream_id,
                    reason,
                )
                self.publication = None
                self.kick(reason)

        pub = self.server.hub.publish(self.live_stream_id, tracks, source="srt", on_close=on_close)
        self.publication = pub
        self._seen_key = not any(t.kind is TrackKind.VIDEO for t in tracks)
        self.publications += 1
        if self.publications == 1:
            self.server.publishes += 1
        log.info(
            "srt %s stream %s: publishing generation %d, tracks %s",
            self.remote,
            self.live_stream_id,
            pub.generation,
            describe_tracks(tracks),
        )

    def _on_units(self, units: list[MediaUnit]) -> None:
        pub = self.publication
        if pub is None:
            return
        for unit in units:
            if not self._seen_key and unit.kind is TrackKind.VIDEO:
                if not unit.keyframe:
                    continue
                self._seen_key = True
            pub.write(unit)

    def _on_end(self, reason: str) -> None:
        pub, self.publication = self.publication, None
        if pub is not None:
            pub.close(reason)
        self.server._forget(self)
        log.info(
            "srt %s stream %s: gone (%s)",
            self.remote,
            self.live_stream_id,
            self.close_reason or reason,
        )


class _SrtReader:
    """The file PyAV reads: one SRT message per `read` (short reads are fine)."""

    def __init__(self, conn: SrtConnection) -> None:
        self._conn = conn
        assert conn._lib is not None
        self._lib = conn._lib
        self._buf = ctypes.create_string_buffer(1500)

    def read(self, size: int) -> bytes:
        conn = self._conn
        if not conn.tracks_known and not self._progressing(conn):
            return b""
        while not conn._closed.is_set():
            n = self._lib.recv(conn.sock, self._buf)
            if n > 0:
                conn.bytes_in += n
                return self._buf.raw[:n]
            if n == 0:
                continue
            if self._lib.last_error() == srt.SRT_EASYNCRCV:  # SRTO_RCVTIMEO passed
                if not conn.tracks_known and not self._progressing(conn):
                    return b""
                continue
            return b""  # connection lost or closed: end of stream
        return b""

    @staticmethod
    def _progressing(conn: SrtConnection) -> bool:
        """False (and `conn.refusal` says why) when the caller is not sending a
        stream we can read: the reader then ends the stream for PyAV."""
        limits = conn.server.limits
        elapsed = time.monotonic() - conn.opened_at
        if not conn.header_read and (
            conn.bytes_in > limits.header_bytes or elapsed > limits.header_wait
        ):
            conn.refusal = (
                f"no MPEG-TS program in the first {conn.bytes_in} bytes ({elapsed:.1f} s): "
                "publish MPEG-TS over SRT"
            )
        elif elapsed > limits.track_wait:
            conn.refusal = (
                f"no H.264 keyframe with its SPS/PPS (or AAC) within {limits.track_wait:.0f} s"
            )
        return not conn.refusal
