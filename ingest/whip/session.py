"""WHIP sessions: one publishing peer connection feeding one hub publication.

Owns `WhipService` (authorises stream keys, creates/deletes sessions, routes
keyframe requests from outputs) and `WhipSession` (the aiortc peer connection
and the media path into the hub):

* H.264 is forwarded without decoding: a pass-through decoder yields Annex B
  access units; they become AVCC `MediaUnit`s, dts = pts = RTP time (90 kHz)
  shifted so that both tracks share a wall-clock origin (the session's first
  media packet), keyframe = the unit has an IDR NAL unit.
* VP8 (only when no usable H.264 was offered) is decoded by aiortc and encoded
  to H.264 by libx264 in this session's worker thread.
* Opus is decoded by aiortc and encoded to AAC-LC (48 kHz stereo, n x 1024
  timestamps) in the same worker thread.
* Nothing is published to the hub before the first keyframe with SPS/PPS, so
  `TrackInfo` (avcC, size) is complete; PLIs are sent at start, every 0.5 s until
  then, when the last keyframe is 2 s old (browsers send keyframes only when
  asked; HLS segments need them) and when an output asks (`request_keyframe`),
  at most every 300 ms. A new SPS (the browser changed resolution) starts a new
  hub generation.
* The hub closing the publication (takeover by another publisher of the key,
  kick on key reset/disable) closes the peer connection; the peer going away
  (ICE/DTLS failure, `DELETE`) closes the publication.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiortc import RTCRtpReceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame

from ingest.hub import Hub, MediaUnit, Publication, TrackInfo, TrackKind
from ingest.ports import PublishAuthority, PublishDenied
from ingest.webrtc import h264
from ingest.webrtc.config import WebRtcConfig, new_peer_connection, prepare_ice
from ingest.webrtc.limits import admit
from ingest.webrtc.passthrough import (
    EncodedFrame,
    enable_passthrough,
    negotiated_codec,
    request_keyframe,
    use_marker_jitter_buffer,
)
from ingest.webrtc.sdp import (
    OfferSummary,
    audio_preferences,
    inspect_offer,
    strip_mdns_candidates,
    video_preferences,
)
from ingest.webrtc.transcode import SAMPLE_RATE, AacEncoder, H264Encoder

log = logging.getLogger(__name__)

PLI_MIN_INTERVAL_S = 0.3
PLI_UNTIL_KEYFRAME_S = 0.5
KEYFRAME_INTERVAL_S = 2.0
"""WebRTC encoders send keyframes only when asked; HLS segments and recordings need
one every couple of seconds, so the session asks when the last one is this old."""
AUDIO_RECEIVE_DELAY_S = 0.080
"""aiortc's audio jitter buffer holds 4 packets (80 ms) before releasing one; the
video one (marker-bit release) none to speak of. Arrival times are corrected by
these so audio and video line up (no RTCP SR mapping)."""
VIDEO_RECEIVE_DELAY_S = 0.0
AAC_PRIMING = 1024
"""FFmpeg's AAC encoder emits one frame of priming before the first input sample."""
DECODED_BACKLOG = 3
"""Decoded frames waiting for the encoder thread; older ones are dropped."""


class AuthorityUnavailable(Exception):
    """The publish authority failed (store down...): HTTP 503."""


class WhipSession:
    def __init__(
        self, service: WhipService, live_stream_id: str, stream_key: str, remote: str
    ) -> None:
        self.service = service
        self.id = secrets.token_urlsafe(18)
        self.etag = f'"{secrets.token_hex(8)}"'
        self.live_stream_id = live_stream_id
        self.stream_key = stream_key
        self.remote = remote
        self.created_at = time.time()
        self.pc = new_peer_connection(service.config)
        self.publication: Publication | None = None
        self.closed = False
        self.close_reason = ""
        self.video_codec: str | None = None
        self.has_audio = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"whip-{self.id[:6]}")
        self._video_receiver: RTCRtpReceiver | None = None
        self._epoch: float | None = None
        self._video_offset: int | None = None
        self._audio_base: int | None = None
        self._aac_count = 0
        self._sps: bytes | None = None
        self._pps: bytes | None = None
        self._video_track: TrackInfo | None = None
        self._audio_track: TrackInfo | None = None
        self._last_pli = 0.0
        self._last_keyframe_at = 0.0
        self._force_idr = False
        self._replacing = False
        self.units_in = 0

    # -- signalling -------------------------------------------------------------------

    async def negotiate(self, offer_sdp: str, summary: OfferSummary) -> str:
        pc = self.pc
        for section in summary.sections:
            t = pc.addTransceiver(section.kind, direction="recvonly")
            if section.kind == "video":
                t.setCodecPreferences(video_preferences(allow_vp8=True))
            else:
                t.setCodecPreferences(audio_preferences())
        await pc.setRemoteDescription(
            RTCSessionDescription(
                sdp=strip_mdns_candidates(
                    offer_sdp, allow_private=self.service.config.allow_private_candidates
                ),
                type="offer",
            )
        )
        prepare_ice(pc, self.service.config)
        for t in pc.getTransceivers():
            if t.kind == "video":
                self.video_codec = negotiated_codec(t)
                if self.video_codec == "H264":
                    enable_passthrough(t)
                    use_marker_jitter_buffer(t.receiver)
                self._video_receiver = t.receiver
                self._spawn(self._run_video(t.receiver.track, self.video_codec or ""))
            elif t.kind == "audio":
                self.has_audio = True
                self._audio_track = TrackInfo(
                    kind=TrackKind.AUDIO,
                    codec="aac",
                    timescale=SAMPLE_RATE,
                    config=AacEncoder().config,
                    sample_rate=SAMPLE_RATE,
                    channels=2,
                )
                self._spawn(self._run_audio(t.receiver.track))
        pc.on("connectionstatechange", self._on_state)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        self._spawn(self._watchdog())
        return pc.localDescription.sdp

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.request_keyframe()
        elif state in ("failed", "closed"):
            self._spawn(self.close("disconnected"))

    async def _watchdog(self) -> None:
        await asyncio.sleep(self.service.config.connect_timeout_s)
        if self.pc.connectionState != "connected" and not self.closed:
            log.info(
                "whip %s: not connected after %ss", self.id, self.service.config.connect_timeout_s
            )
            await self.close("connect_timeout")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- keyframes ---------------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe soon (rate-limited)."""
        if self.closed:
            return
        now = time.monotonic()
        if now - self._last_pli < PLI_MIN_INTERVAL_S:
            return
        self._last_pli = now
        if self.video_codec == "H264":
            if self._video_receiver is not None:
                self._spawn(request_keyframe(self._video_receiver))
        else:
            self._force_idr = True

    async def _keyframe_pacer(self) -> None:
        """PLI every 0.5 s until the first keyframe, then whenever the last keyframe
        is older than `keyframe_interval_s` (a GOP like an RTMP encoder's)."""
        interval = self.service.keyframe_interval_s
        while not self.closed:
            if self.publication is None:
                self.request_keyframe()
            elif interval > 0 and time.monotonic() - self._last_keyframe_at >= interval:
                self.request_keyframe()
            await asyncio.sleep(PLI_UNTIL_KEYFRAME_S)

    # -- media ------------------------------------------------------------------------

    def _now_epoch(self) -> float:
        now = time.time()
        if self._epoch is None:
            # a little before the first packet, so corrected timestamps stay positive
            self._epoch = now - 0.2
        return now

    async def _run_video(self, track: MediaStreamTrack, codec: str) -> None:
        self._spawn(self._keyframe_pacer())
        try:
            if codec == "H264":
                while True:
                    frame = await track.recv()
                    if isinstance(frame, EncodedFrame):
                        self._on_access_unit(h264.split_annexb(frame.data), frame.timestamp)
            else:
                await self._run_transcoded_video(track)
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("whip %s: video pipeline failed", self.id)
            await self.close("error")

    async def _run_transcoded_video(self, track: MediaStreamTrack) -> None:
        encoder = H264Encoder()
        backlog: deque[VideoFrame] = deque(maxlen=DECODED_BACKLOG)
        ready = asyncio.Event()
        ended = False

        async def pull() -> None:
            nonlocal ended
            try:
                while True:
                    frame = await track.recv()
                    if isinstance(frame, VideoFrame):
                        backlog.append(frame)
                        ready.set()
            except MediaStreamError:
                ended = True
                ready.set()

        self._spawn(pull())
        loop = asyncio.get_running_loop()
        while True:
            await ready.wait()
            ready.clear()
            while backlog:
                frame = backlog.popleft()
                pts = int(frame.pts or 0)
                force, self._force_idr = self._force_idr, False
                out = await loop.run_in_executor(self._executor, encoder.encode, frame, pts, force)
                for pts_out, data in out:
                    self._on_access_unit(h264.split_annexb(data), pts_out)
            if ended:
                return

    def _on_access_unit(self, nals: list[bytes], rtp_ts: int) -> None:
        now = self._now_epoch()
        if self._video_offset is None:
            since = now - (self._epoch or now) - VIDEO_RECEIVE_DELAY_S
            self._video_offset = round(since * 90000) - rtp_ts
        nals = [n for n in nals if h264.nal_type(n) not in (h264.NAL_AUD, 0) and len(n) > 0]
        if not nals:
            return
        keyframe = h264.is_keyframe(nals)
        if keyframe:
            self._last_keyframe_at = time.monotonic()
            sps, pps = h264.find_parameter_sets(nals)
            sps = sps or self._sps
            pps = pps or self._pps
            if (
                sps is not None
                and pps is not None
                and (sps != self._sps or pps != self._pps or self.publication is None)
            ):
                try:
                    info = h264.parse_sps(sps)
                except h264.H264Error:
                    log.warning("whip %s: unparsable SPS", self.id)
                    return
                self._sps, self._pps = sps, pps
                self._video_track = TrackInfo(
                    kind=TrackKind.VIDEO,
                    codec="h264",
                    timescale=90000,
                    config=h264.build_avcc_config(sps, pps),
                    width=info.width,
                    height=info.height,
                )
                self._publish()
        if self.publication is None:
            return
        ts = rtp_ts + self._video_offset
        self.units_in += 1
        self.publication.write(
            MediaUnit(
                kind=TrackKind.VIDEO,
                dts=ts,
                pts=ts,
                data=h264.to_avcc(nals),
                keyframe=keyframe,
                wallclock=now,
            )
        )

    async def _run_audio(self, track: MediaStreamTrack) -> None:
        encoder = AacEncoder()
        backlog: deque[AudioFrame] = deque(maxlen=50)
        ready = asyncio.Event()
        ended = False

        async def pull() -> None:
            nonlocal ended
            try:
                while True:
                    frame = await track.recv()
                    if isinstance(frame, AudioFrame):
                        backlog.append(frame)
                        ready.set()
            except MediaStreamError:
                ended = True
                ready.set()

        self._spawn(pull())
        loop = asyncio.get_running_loop()
        try:
            while True:
                await ready.wait()
                ready.clear()
                while backlog:
                    frame = backlog.popleft()
                    now = self._now_epoch()
                    if self._audio_base is None:
                        since = now - (self._epoch or now) - AUDIO_RECEIVE_DELAY_S
                        self._audio_base = round(since * SAMPLE_RATE) - AAC_PRIMING
                    frames = await loop.run_in_executor(self._executor, encoder.encode, frame)
                    for data in frames:
                        self._on_aac(data, now)
                if ended:
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("whip %s: audio pipeline failed", self.id)

    def _on_aac(self, data: bytes, now: float) -> None:
        ts = (self._audio_base or 0) + self._aac_count * 1024
        self._aac_count += 1
        if self.publication is None:
            if self.video_codec is not None or self._audio_track is None:
                return  # video streams start at the first keyframe
            self._publish()
        if self.publication is not None:
            self.units_in += 1
            self.publication.write(
                MediaUnit(
                    kind=TrackKind.AUDIO, dts=ts, pts=ts, data=data, keyframe=True, wallclock=now
                )
            )

    def _publish(self) -> None:
        if self.closed:
            return
        tracks = tuple(t for t in (self._video_track, self._audio_track) if t is not None)
        old = self.publication
        self._replacing = old is not None
        try:
            self.publication = self.service.hub.publish(
                self.live_stream_id, tracks, source="whip", on_close=self._on_hub_close
            )
        finally:
            self._replacing = False
        if old is not None and not old.closed:
            old.close("republish")

    def _on_hub_close(self, reason: str) -> None:
        if self._replacing or reason == "republish":
            return
        self.publication = None
        if not self.closed:
            self._spawn(self.close(reason, close_publication=False))

    # -- teardown ---------------------------------------------------------------------

    async def close(self, reason: str = "ended", *, close_publication: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.service._forget(self)
        pub, self.publication = self.publication, None
        if pub is not None and close_publication:
            pub.close(reason)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        with contextlib.suppress(Exception):
            await self.pc.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


class WhipService:
    """Creates and tracks WHIP sessions for one hub."""

    def __init__(
        self,
        hub: Hub,
        authority: PublishAuthority,
        config: WebRtcConfig,
        *,
        keyframe_interval_s: float = KEYFRAME_INTERVAL_S,
    ) -> None:
        self.hub = hub
        self.authority = authority
        self.config = config
        self.keyframe_interval_s = keyframe_interval_s
        self.sessions: dict[str, WhipSession] = {}
        self.on_session_closed: Callable[[WhipSession], None] | None = None

    async def create(self, stream_key: str, offer_sdp: str, remote: str) -> WhipSession:
        """Validate, authorise, negotiate. Raises `SdpError`, `UnsupportedOffer`,
        `PublishDenied`, `AuthorityUnavailable` (anything else: aiortc refused the offer).

        The offer is checked before the key: a grant has side effects (the service's
        lifecycle marks the stream connected and opens its asset), which a refused
        offer must not cause."""
        summary = inspect_offer(offer_sdp, sending=True)
        admit(self.sessions.values(), self.config, live_stream_id=None, remote=remote)
        try:
            grant = await self.authority.authorize_publish(
                stream_key, protocol="whip", remote=remote
            )
        except PublishDenied:
            raise
        except Exception as exc:
            raise AuthorityUnavailable(str(exc)) from exc
        admit(
            self.sessions.values(),
            self.config,
            live_stream_id=grant.live_stream_id,
            remote=remote,
        )
        session = WhipSession(self, grant.live_stream_id, stream_key, remote)
        self.sessions[session.id] = session
        try:
            await session.negotiate(offer_sdp, summary)
        except BaseException:
            await session.close("negotiation_failed")
            raise
        return session

    def get(self, session_id: str) -> WhipSession | None:
        return self.sessions.get(session_id)

    async def delete(self, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None:
            return False
        await session.close("ended")
        return True

    def request_keyframe(self, live_stream_id: str) -> bool:
        """For outputs (WHEP): ask the WHIP publisher of this stream for a keyframe."""
        found = False
        for s in list(self.sessions.values()):
            if s.live_stream_id == live_stream_id and s.publication is not None:
                s.request_keyframe()
                found = True
        return found

    def _forget(self, session: WhipSession) -> None:
        self.sessions.pop(session.id, None)
        if self.on_session_closed is not None:
            self.on_session_closed(session)

    async def close_all(self) -> None:
        await asyncio.gather(
            *(s.close("shutdown") for s in list(self.sessions.values())), return_exceptions=True
        )
