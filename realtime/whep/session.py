"""WHEP viewer sessions: any live stream out to WebRTC viewers.

Owns `WhepService` (resolves playback ids, creates/deletes viewer sessions, one
shared AAC->Opus transcoder per stream), `WhepSession` (one viewer's peer
connection) and the two custom aiortc tracks:

* `ForwardVideoTrack` reads the viewer's own hub reader (bounded by the hub,
  lossy to the next keyframe) and returns `av.Packet`s holding Annex B access
  units; aiortc's sender then only packetizes them (`H264Encoder.pack`): no
  re-encoding. SPS/PPS from the track's avcC are put in front of keyframes that
  lack them (RTMP sources). The viewer starts at a keyframe: the hub's cached
  GOP is sent first with squeezed timestamps (1 ms apart) so the browser
  decodes through it without playing it back late, then live units keep their
  real spacing. Timestamps stay continuous across publisher generations.
* `OpusTrack` returns Opus packets from the stream's `SharedOpus`, which reads
  AAC from the hub once, transcodes in a worker thread and hands each packet to
  every viewer's small bounded buffer (oldest dropped).

A viewer's PLI (aiortc calls `sender._send_keyframe`) and every new viewer ask
the publisher for a keyframe through `keyframe_request(live_stream_id)` (wired to
the WHIP service; a no-op for RTMP, whose next GOP comes by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import inspect
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ingest.hub import (
    Hub,
    MediaUnit,
    PublicationEnded,
    PublicationStarted,
    ReaderClosed,
    Stream,
    StreamReader,
    TrackKind,
)
from ingest.webrtc import h264
from ingest.webrtc.config import WebRtcConfig, new_peer_connection, prepare_ice
from ingest.webrtc.limits import admit
from ingest.webrtc.sdp import (
    OfferSummary,
    UnsupportedOffer,
    audio_preferences,
    inspect_offer,
    strip_mdns_candidates,
    video_preferences,
)
from ingest.webrtc.transcode import OPUS_FRAME, SAMPLE_RATE, AacToOpus

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
VIEWER_MAX_UNITS = 256
"""Per-viewer hub buffer (units of audio+video; ~4 s at 30 fps + audio)."""
VIEWER_AUDIO_PACKETS = 25
"""Per-viewer Opus buffer: 0.5 s."""
CATCHUP_STEP = 90
KEYFRAME_REQUEST_INTERVAL_S = 0.5

Resolver = Callable[[str, str | None], "str | Awaitable[str]"]
"""resolve(playback_id, token) -> live_stream_id; raises `PlaybackDenied`,
`PermissionError` (403) or `LookupError` (404)."""


class PlaybackDenied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StreamNotLive(Exception):
    pass


class ServedElsewhere(Exception):
    """Another node ingests the stream: the viewer should ask it (`base_url`)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.base_url = base_url


Locate = Callable[[str], Awaitable[str | None]]
"""live stream id → the base URL of the node that ingests it, if another does."""


class ResolverUnavailable(Exception):
    """The playback resolver failed for another reason: HTTP 503."""


class ForwardVideoTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, reader: StreamReader, on_need_keyframe: Callable[[], None]) -> None:
        super().__init__()
        self.reader = reader
        self._need_keyframe = on_need_keyframe
        self._catchup: int | None = None
        """Media units already waiting when sending starts (the cached GOP plus what
        arrived while ICE/DTLS connected): sent at once, squeezed in time."""
        self._param_sets: list[bytes] = []
        self._length_size = 4
        self._waiting_keyframe = True
        self._generation: int | None = None
        self._offset: int | None = None
        self._out_last: int | None = None
        self._last_catchup_src: int | None = None
        self._last_request = 0.0
        self.sent = 0

    def request_keyframe(self) -> None:
        now = time.monotonic()
        if now - self._last_request >= KEYFRAME_REQUEST_INTERVAL_S:
            self._last_request = now
            self._need_keyframe()

    def _on_started(self, item: PublicationStarted) -> None:
        video = next((t for t in item.tracks if t.kind is TrackKind.VIDEO), None)
        self._param_sets = []
        if video is not None and video.config:
            with contextlib.suppress(h264.H264Error, IndexError, ValueError):
                sps, pps, self._length_size = h264.parse_avcc_config(video.config)
                self._param_sets = [*sps, *pps]
        if self._generation is not None and item.generation != self._generation:
            self._offset = None
            self._waiting_keyframe = True
        self._generation = item.generation

    def _stamp(self, unit: MediaUnit, catchup: bool) -> int:
        if catchup:
            out = 0 if self._out_last is None else self._out_last + CATCHUP_STEP
            self._last_catchup_src = unit.pts
        else:
            if self._offset is None:
                if self._last_catchup_src is not None and self._out_last is not None:
                    self._offset = self._out_last - self._last_catchup_src
                elif self._out_last is not None:
                    self._offset = self._out_last + 3000 - unit.pts
                else:
                    self._offset = -unit.pts
                self._last_catchup_src = None
            out = unit.pts + self._offset
        self._out_last = out if self._out_last is None else max(self._out_last, out)
        return out

    async def recv(self) -> av.Packet:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            try:
                item = await self.reader.get()
            except ReaderClosed:
                self.stop()
                raise MediaStreamError from None
            if self._catchup is None:
                taken = 1 if isinstance(item, MediaUnit) else 0
                self._catchup = self.reader.pending + taken
            catchup = self._catchup > 0
            if isinstance(item, PublicationStarted):
                self._on_started(item)
                continue
            if isinstance(item, PublicationEnded):
                continue
            if catchup:
                self._catchup -= 1
            if item.kind is not TrackKind.VIDEO:
                continue
            if self._waiting_keyframe and not item.keyframe:
                self.request_keyframe()
                continue
            self._waiting_keyframe = False
            try:
                nals = h264.split_avcc(item.data, self._length_size)
            except h264.H264Error:
                continue
            if item.keyframe and not any(h264.nal_type(n) == h264.NAL_SPS for n in nals):
                nals = [*self._param_sets, *nals]
            packet = av.Packet(h264.to_annexb(nals))
            packet.pts = self._stamp(item, catchup)
            packet.time_base = VIDEO_TIME_BASE
            self.sent += 1
            return packet

    def stop(self) -> None:
        super().stop()
        self.reader.close()


class OpusTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=VIEWER_AUDIO_PACKETS)
        self._ready = asyncio.Event()
        self.dropped = 0

    def push(self, pts: int, data: bytes) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append((pts, data))
        self._ready.set()

    async def recv(self) -> av.Packet:
        while not self._buffer:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        pts, data = self._buffer.popleft()
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = AUDIO_TIME_BASE
        return packet

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class SharedOpus:
    """One AAC -> Opus transcode per live stream, fanned out to its viewers."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.viewers: set[OpusTrack] = set()
        self.reader = stream.subscribe(
            "whep-opus", VIEWER_MAX_UNITS, from_keyframe=False, prompt=True
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whep-opus")
        self._task = asyncio.ensure_future(self._run())
        self._pts = 0
        self._t0 = time.monotonic()
        self._generation: int | None = None
        self.packets = 0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        transcoder: AacToOpus | None = None
        try:
            async for item in self.reader:
                if isinstance(item, PublicationStarted):
                    audio = next((t for t in item.tracks if t.kind is TrackKind.AUDIO), None)
                    transcoder = None
                    if audio is not None and audio.codec == "aac":
                        transcoder = await loop.run_in_executor(
                            self._executor, AacToOpus, audio.config
                        )
                    if self._generation is not None:
                        # keep RTP time moving with the wall clock across a reconnect
                        self._pts = max(self._pts, int((time.monotonic() - self._t0) * SAMPLE_RATE))
                    self._generation = item.generation
                    continue
                if not isinstance(item, MediaUnit) or item.kind is not TrackKind.AUDIO:
                    continue
                if transcoder is None or not self.viewers:
                    continue
                packets = await loop.run_in_executor(
                    self._executor, transcoder.transcode, item.data
                )
                for data in packets:
                    pts = self._pts
                    self._pts += OPUS_FRAME
                    self.packets += 1
                    for viewer in list(self.viewers):
                        viewer.push(pts, data)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("whep: opus transcoder for %s failed", self.stream.id)

    def close(self) -> None:
        self._task.cancel()
        self.reader.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


class WhepSession:
    def __init__(
        self,
        service: WhepService,
        live_stream_id: str,
        playback_id: str,
        remote: str = "",
        token: str | None = None,
    ) -> None:
        self.service = service
        self.id = secrets.token_urlsafe(18)
        self.remote = remote
        self.token = token
        """The bearer it was created with (a signed id's playback token): DELETE and
        PATCH must present it. Without one, the unguessable session URL is the
        capability, as RFC 9725 has it."""
        self.etag = f'"{secrets.token_hex(8)}"'
        self.live_stream_id = live_stream_id
        self.playback_id = playback_id
        self.pc = new_peer_connection(service.config)
        self.video: ForwardVideoTrack | None = None
        self.audio: OpusTrack | None = None
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()

    async def negotiate(self, offer_sdp: str, summary: OfferSummary, stream: Stream) -> str:
        pc = self.pc
        senders = []
        for section in summary.sections:
            if section.kind == "video":
                reader = stream.subscribe(
                    f"whep-{self.id[:8]}", VIEWER_MAX_UNITS, from_keyframe=True, prompt=True
                )
                self.video = ForwardVideoTrack(reader, self._need_keyframe)
                t = pc.addTransceiver(self.video, direction="sendonly")
                t.setCodecPreferences(video_preferences(allow_vp8=False))
                senders.append(t.sender)
            else:
                self.audio = OpusTrack()
                t = pc.addTransceiver(self.audio, direction="sendonly")
                t.setCodecPreferences(audio_preferences())
                self.service._add_audio_viewer(stream, self.audio)
        await pc.setRemoteDescription(
            RTCSessionDescription(
                sdp=strip_mdns_candidates(
                    offer_sdp, allow_private=self.service.config.allow_private_candidates
                ),
                type="offer",
            )
        )
        prepare_ice(pc, self.service.config)
        for sender in senders:
            if self.video is not None:
                # A viewer's PLI/FIR: aiortc would only flag its own encoder.
                sender._send_keyframe = self.video.request_keyframe  # type: ignore[method-assign]
        pc.on("connectionstatechange", self._on_state)
        await pc.setLocalDescription(await pc.createAnswer())
        self._need_keyframe()
        self._spawn(self._watchdog())
        return pc.localDescription.sdp

    def _need_keyframe(self) -> None:
        if self.service.keyframe_request is not None:
            try:
                self.service.keyframe_request(self.live_stream_id)
            except Exception:
                log.exception("keyframe request failed")

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._spawn(self.close())

    async def _watchdog(self) -> None:
        await asyncio.sleep(self.service.config.connect_timeout_s)
        if self.pc.connectionState != "connected" and not self.closed:
            await self.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.service._forget(self)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if self.video is not None:
            self.video.stop()
        if self.audio is not None:
            self.audio.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()


class WhepService:
    def __init__(
        self,
        hub: Hub,
        config: WebRtcConfig,
        resolve: Resolver,
        keyframe_request: Callable[[str], object] | None = None,
        locate: Locate | None = None,
    ) -> None:
        """`locate`: where a stream that is not live here is live (a cluster)."""
        self.hub = hub
        self.config = config
        self.resolve = resolve
        self.keyframe_request = keyframe_request
        self.locate = locate
        self.sessions: dict[str, WhepSession] = {}
        self._opus: dict[str, SharedOpus] = {}

    async def create(
        self, playback_id: str, token: str | None, offer_sdp: str, remote: str = ""
    ) -> WhepSession:
        """Raises `PlaybackDenied`, `PermissionError`, `LookupError`, `StreamNotLive`,
        `ServedElsewhere`, `ResolverUnavailable`, `SdpError`, `UnsupportedOffer`,
        `TooManySessions`."""
        admit(self.sessions.values(), self.config, live_stream_id=None, remote=remote)
        try:
            result = self.resolve(playback_id, token)
            live_stream_id = await result if inspect.isawaitable(result) else result
        except (PlaybackDenied, PermissionError, LookupError):
            raise
        except Exception as exc:
            raise ResolverUnavailable(str(exc)) from exc
        if not isinstance(live_stream_id, str):
            raise LookupError(playback_id)
        summary = inspect_offer(offer_sdp, sending=False)
        stream = self.hub.get(live_stream_id)
        if stream is None or not stream.live:
            origin = await self.locate(live_stream_id) if self.locate is not None else None
            if origin is not None:
                raise ServedElsewhere(origin)
            raise StreamNotLive(live_stream_id)
        for track in stream.tracks:
            if track.kind is TrackKind.VIDEO and track.codec != "h264":
                raise UnsupportedOffer(
                    f"this stream's video is {track.codec}; WebRTC playback needs H.264"
                )
        admit(self.sessions.values(), self.config, live_stream_id=live_stream_id, remote=remote)
        session = WhepSession(self, live_stream_id, playback_id, remote, token)
        self.sessions[session.id] = session
        try:
            await session.negotiate(offer_sdp, summary, stream)
        except BaseException:
            await session.close()
            raise
        return session

    def get(self, session_id: str) -> WhepSession | None:
        return self.sessions.get(session_id)

    async def delete(self, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None:
            return False
        await session.close()
        return True

    def viewers(self, live_stream_id: str) -> int:
        return sum(1 for s in self.sessions.values() if s.live_stream_id == live_stream_id)

    def _add_audio_viewer(self, stream: Stream, track: OpusTrack) -> None:
        shared = self._opus.get(stream.id)
        if shared is None:
            shared = self._opus[stream.id] = SharedOpus(stream)
        shared.viewers.add(track)

    def _forget(self, session: WhepSession) -> None:
        self.sessions.pop(session.id, None)
        if session.audio is not None:
            shared = self._opus.get(session.live_stream_id)
            if shared is not None:
                shared.viewers.discard(session.audio)
                if not shared.viewers:
                    shared.close()
                    del self._opus[session.live_stream_id]

    async def close_all(self) -> None:
        await asyncio.gather(
            *(s.close() for s in list(self.sessions.values())), return_exceptions=True
        )
        for shared in self._opus.values():
            shared.close()
        self._opus.clear()


__all__ = [
    "ForwardVideoTrack",
    "OpusTrack",
    "PlaybackDenied",
    "ResolverUnavailable",
    "SharedOpus",
    "StreamNotLive",
    "WhepService",
    "WhepSession",
]
