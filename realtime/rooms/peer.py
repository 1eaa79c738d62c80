"""Peer connections of one participant: one per direction.

Choice: two RTCPeerConnections per participant.

* **publish PC** (client → server): the client offers its tracks (audio, video),
  the server answers with the room's one video codec and Opus. Received tracks
  are marked pass-through (`forwarder.mark_passthrough`) and become
  `TrackSource`s.
* **subscribe PC** (server → client): the server offers one ``sendonly``
  transceiver per subscribed track, carrying a `ForwardedTrack`, and offers again
  whenever the set changes (one negotiation at a time; changes made meanwhile are
  folded into the next offer). A transceiver whose track went away is set
  ``inactive`` and reused for the next track of the same kind, so the SDP does
  not grow without end. Each offer carries the mid → track mapping.

Why not one PC with renegotiation both ways: the client's publish offers and
the server's subscribe offers would collide (glare); two PCs keep each side the
only offerer of its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from realtime.rooms.forwarder import (
    ForwardedTrack,
    TrackSource,
    mark_passthrough,
    use_low_latency_jitter_buffer,
)
from realtime.rooms.rtc import RtcSettings
from realtime.rooms.signaling import MidMapping, Offer

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 15.0
NEGOTIATION_DEBOUNCE_S = 0.05


def codec_capabilities(kind: str, mime_type: str) -> list[RTCRtpCodecCapability]:
    """The capabilities of exactly one codec (H.264: packetization-mode 1 only)."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    out = [c for c in caps if c.mimeType.lower() == mime_type.lower()]
    if mime_type.lower() == "video/h264":
        out = [c for c in out if str(c.parameters.get("packetization-mode")) == "1"] or out
    return out


OnState = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class IncomingTrack:
    mid: str
    kind: str
    track: MediaStreamTrack
    receiver: RTCRtpReceiver
    mime_type: str
    """The negotiated codec the publisher sends with (e.g. "video/VP8")."""


def restrict_codecs(transceiver: RTCRtpTransceiver, mime_type: str) -> None:
    """Keep only `mime_type` (and its RTX) among the transceiver's negotiated codecs,
    when the remote offered it (aiortc answers with `transceiver._codecs`)."""
    codecs = transceiver._codecs
    main = [c for c in codecs if c.mimeType.lower() == mime_type.lower()]
    if mime_type.lower() == "video/h264":
        main = [c for c in main if str(c.parameters.get("packetization-mode")) == "1"] or main
    if not main:
        return
    pts = {c.payloadType for c in main[:1]}
    rtx = [
        c for c in codecs if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") in pts
    ]
    transceiver._codecs = main[:1] + rtx


def negotiated_mime(transceiver: RTCRtpTransceiver) -> str | None:
    for c in transceiver._codecs:
        if not c.mimeType.lower().endswith("/rtx"):
            return str(c.mimeType)
    return None


class PublishPeer:
    """Receives one participant's tracks; the client offers, we answer."""

    def __init__(self, rtc: RtcSettings, video_codec: str, on_state: OnState) -> None:
        self._rtc = rtc
        self._video_codec = video_codec
        self._on_state = on_state
        self.pc: RTCPeerConnection | None = None
        self._new: list[MediaStreamTrack] = []

    def _ensure_pc(self) -> RTCPeerConnection:
        if self.pc is not None:
            return self.pc
        pc = self._rtc.new_peer_connection()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            mark_passthrough(track)
            for t in pc.getTransceivers():
                if t.receiver.track is track:
                    use_low_latency_jitter_buffer(t.receiver)
            self._new.append(track)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            self._on_state(pc.connectionState)

        self.pc = pc
        return pc

    async def answer(self, sdp: str) -> tuple[str, list[IncomingTrack]]:
        """Answer the client's offer; returns the answer and the tracks it added."""
        pc = self._ensure_pc()
        self._new = []
        await pc.setRemoteDescription(
            RTCSessionDescription(sdp=self._rtc.remote_sdp(sdp), type="offer")
        )
        for t in pc.getTransceivers():
            restrict_codecs(t, self._video_codec if t.kind == "video" else "audio/opus")
        self._rtc.prepare(pc)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        incoming = []
        for track in self._new:
            for t in pc.getTransceivers():
                if t.receiver.track is track and t.mid is not None:
                    incoming.append(
                        IncomingTrack(
                            t.mid, track.kind, track, t.receiver, negotiated_mime(t) or ""
                        )
                    )
        self._new = []
        return pc.localDescription.sdp, incoming

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()


@dataclass(slots=True)
class _Slot:
    transceiver: RTCRtpTransceiver
    track: ForwardedTrack
    track_id: str | None
    identity: str
    mime: str


class SubscribePeer:
    """Sends the tracks one participant subscribes to; the server offers."""

    def __init__(
        self,
        rtc: RtcSettings,
        video_codec: str,
        send_offer: Callable[[Offer], Awaitable[None]],
        on_state: OnState,
    ) -> None:
        self._rtc = rtc
        self._video_codec = video_codec
        self._send_offer = send_offer
        self._on_state = on_state
        self.pc: RTCPeerConnection | None = None
        self._slots: list[_Slot] = []
        self._desired: dict[str, tuple[TrackSource, str]] = {}
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._answer: asyncio.Future[str] | None = None
        self.negotiations = 0
        self.closed = False
        self.phase = "idle"
        """"idle" | "offering" | "awaiting_answer" | "applying_answer" (diagnostics)."""
        self.phase_since = time.monotonic()

    # -- what to send ------------------------------------------------------------------
    def set_desired(self, sources: dict[str, tuple[TrackSource, str]]) -> None:
        """track_id → (source, publisher identity); negotiates if it changed."""
        current = {s.track_id for s in self._slots if s.track_id is not None}
        self._desired = dict(sources)
        if set(sources) != current:
            self._dirty = True
            self._kick()

    @property
    def tracks(self) -> dict[str, ForwardedTrack]:
        return {s.track_id: s.track for s in self._slots if s.track_id is not None}

    def _kick(self) -> None:
        if self.closed:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._negotiate_loop(), name="subscribe-negotiation")

    # -- negotiation ------------------------------------------------------------------------
    def handle_answer(self, sdp: str) -> bool:
        if self._answer is None or self._answer.done():
            return False
        self._answer.set_result(sdp)
        return True

    def _ensure_pc(self) -> RTCPeerConnection:
        if self.pc is None:
            pc = self._rtc.new_peer_connection()

            @pc.on("connectionstatechange")
            def on_state() -> None:
                self._on_state(pc.connectionState)

            self.pc = pc
        return self.pc

    def _apply(self) -> None:
        pc = self._ensure_pc()
        wanted = dict(self._desired)
        for old in self._slots:
            if old.track_id is not None and old.track_id not in wanted:
                old.track.detach()
                old.track_id = None
                old.transceiver.direction = "inactive"
        have = {s.track_id for s in self._slots if s.track_id is not None}
        for track_id, (source, identity) in wanted.items():
            if track_id in have:
                continue
            mime = source.mime_type or (
                self._video_codec if source.kind == "video" else "audio/opus"
            )
            slot = next(
                (
                    s
                    for s in self._slots
                    if s.track_id is None
                    and s.transceiver.kind == source.kind
                    and s.mime.lower() == mime.lower()
                ),
                None,
            )
            if slot is None:
                ft = ForwardedTrack(source.kind, name=track_id)
                tr = pc.addTransceiver(ft, direction="sendonly")
                prefs = codec_capabilities(source.kind, mime)
                if prefs:
                    tr.setCodecPreferences(prefs)
                ft.bind_sender(tr.sender)
                slot = _Slot(tr, ft, None, identity, mime)
                self._slots.append(slot)
            else:
                slot.transceiver.direction = "sendonly"
            slot.track_id = track_id
            slot.identity = identity
            slot.track.attach(source)

    async def _negotiate_loop(self) -> None:
        try:
            while self._dirty and not self.closed:
                self._set_phase("offering")
                await asyncio.sleep(NEGOTIATION_DEBOUNCE_S)  # fold bursts of changes
                self._dirty = False
                self._apply()
                pc = self._ensure_pc()
                self._rtc.prepare(pc)
                offer = await pc.createOffer()
                await pc.setLocalDescription(offer)
                mapping = tuple(
                    MidMapping(
                        s.transceiver.mid or "",
                        s.track_id,
                        s.identity,
                        "video" if s.transceiver.kind == "video" else "audio",
                    )
                    for s in self._slots
                    if s.track_id is not None
                )
                loop = asyncio.get_running_loop()
                self._answer = loop.create_future()
                await self._send_offer(Offer("subscribe", pc.localDescription.sdp, mapping))
                self._set_phase("awaiting_answer")
                sdp = await asyncio.wait_for(self._answer, ANSWER_TIMEOUT_S)
                self._set_phase("applying_answer")
                await pc.setRemoteDescription(
                    RTCSessionDescription(sdp=self._rtc.remote_sdp(sdp), type="answer")
                )
                self.negotiations += 1
            self._set_phase("idle")
        except TimeoutError:
            log.warning("subscriber did not answer in %.0f s", ANSWER_TIMEOUT_S)
            self._on_state("failed")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("subscribe negotiation failed")
            self._on_state("failed")

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.phase_since = time.monotonic()

    async def close(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for slot in self._slots:
            slot.track.detach()
            slot.track.stop()
        if self.pc is not None:
            await self.pc.close()
