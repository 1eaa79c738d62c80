"""A Python room participant over aiortc (tests, benchmarks, bots).

`RoomClient` speaks the signaling protocol of `signaling`, publishes given
tracks on its publish PC and receives everyone else's tracks on its subscribe
PC. With ``passthrough=True`` received tracks yield `forwarder.EncodedFrame`s
(what the publisher encoded, byte for byte) instead of decoded frames.
`EncodedSource` is a sender track that plays a list of pre-encoded packets in
real time (so tests know exactly which bytes were sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from realtime.rooms.forwarder import EncodedFrame, mark_passthrough
from realtime.rooms.rtc import RtcSettings


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    data: bytes
    duration: int
    """In 1/clock_rate."""
    keyframe: bool


class EncodedSource(MediaStreamTrack):
    """Sends pre-encoded packets (H.264 Annex B, VP8 or Opus) at their real rate, looping."""

    def __init__(
        self,
        kind: str,
        packets: Sequence[EncodedPacket],
        clock_rate: int,
        *,
        loop: bool = True,
        on_sent: Callable[[int, float], None] | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self._packets = list(packets)
        self._clock = clock_rate
        self._repeat = loop
        self._i = 0
        self._pts = 0
        self._start: float | None = None
        self.sent = 0
        self._on_sent = on_sent

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._i >= len(self._packets):
            if not self._repeat:
                self.stop()
                raise MediaStreamError
            self._i = 0
        p = self._packets[self._i]
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._pts / self._clock
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        pkt = av.Packet(p.data)
        pkt.pts = self._pts
        pkt.time_base = fractions.Fraction(1, self._clock)
        if self._on_sent is not None:
            self._on_sent(self._i, time.time())
        self._pts += p.duration
        self._i += 1
        self.sent += 1
        return pkt


def test_frame(i: int, width: int, height: int) -> av.VideoFrame:
    """A moving, colourful yuv420p test picture, different for every i."""
    f = av.VideoFrame(width, height, "yuv420p")
    y = bytearray(width * height)
    band = (i * 4) % height
    for row in range(height):
        v = 40 + ((row + i * 3) % 180)
        y[row * width : (row + 1) * width] = bytes([v]) * width
        if band <= row < band + 16:
            x0 = (i * 5) % max(1, width - 32)
            y[row * width + x0 : row * width + x0 + 32] = b"\xeb" * 32
    f.planes[0].update(bytes(y))
    cw, ch = width // 2, height // 2
    f.planes[1].update(bytes([(60 + i * 2) % 256]) * (cw * ch))
    f.planes[2].update(bytes([(200 - i) % 256]) * (cw * ch))
    return f


def encode_h264(
    frames: int = 60,
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    gop: int = 30,
    bitrate: int = 500_000,
) -> list[EncodedPacket]:
    """A test pattern encoded with libx264 (baseline, Annex B), each frame distinct."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.bit_rate = bitrate
    codec.options = {
        "profile": "baseline",
        "tune": "zerolatency",
        "preset": "ultrafast",
        "g": str(gop),
        "keyint_min": str(gop),
        "sc_threshold": "0",
        "repeat-headers": "1",
    }
    codec.open()
    out: list[EncodedPacket] = []
    step = 90000 // fps
    for i in range(frames):
        f = test_frame(i, width, height)
        f.pts = i
        for pkt in codec.encode(f):
            out.append(EncodedPacket(bytes(pkt), step, bool(pkt.is_keyframe)))
    for pkt in codec.encode(None):
        out.append(EncodedPacket(bytes(pkt), step, bool(pkt.is_keyframe)))
    return out


def encode_opus(frames: int = 50) -> list[EncodedPacket]:
    """20 ms Opus frames of a rising tone, each distinct."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = 64000
    codec.open()
    out: list[EncodedPacket] = []
    n = 960
    t0 = 0
    for i in range(frames):
        freq = 220 + 10 * i
        samples = bytearray()
        for k in range(n):
            v = int(8000 * math.sin(2 * math.pi * freq * (t0 + k) / 48000))
            samples += struct.pack("<hh", v, v)
        f = av.AudioFrame(format="s16", layout="stereo", samples=n)
        f.planes[0].update(bytes(samples))
        f.sample_rate = 48000
        f.pts = t0
        t0 += n
        for pkt in codec.encode(f):
            out.append(EncodedPacket(bytes(pkt), 960, True))
    return out


@dataclass(slots=True)
class Received:
    identity: str
    track_id: str
    kind: str
    frames: list[EncodedFrame] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)


class RoomClient:
    """One participant. `await connect()`, `await publish(...)`, read `received`."""

    def __init__(
        self,
        base_url: str,
        room_id: str,
        token: str,
        *,
        rtc: RtcSettings | None = None,
        passthrough: bool = True,
        keep_frames: int = 100_000,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/v1/rooms/{room_id}/signal?token={token}"
        self.rtc = rtc or RtcSettings.loopback()
        self.passthrough = passthrough
        self.keep_frames = keep_frames
        self.messages: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.participants: set[str] = set()
        self.received: dict[str, Received] = {}
        self._mids: dict[str, tuple[str, str, str]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.pub_pc: RTCPeerConnection | None = None
        self.sub_pc: RTCPeerConnection | None = None
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[Any]]] = []
        self.identity: str | None = None
        self.on_frame: Callable[[Received, EncodedFrame], None] | None = None

    async def connect(self, *, auto_subscribe: bool = True) -> dict[str, Any]:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url, heartbeat=None)
        self._reader = asyncio.create_task(self._read())
        await self.send({"type": "join", "auto_subscribe": auto_subscribe})
        joined = await self.wait_for(lambda m: m["type"] in ("joined", "error"))
        if joined["type"] == "joined":
            self.identity = joined["identity"]
            self.participants = {p["identity"] for p in joined["participants"]}
        return joined

    async def send(self, msg: dict[str, Any] | str) -> None:
        assert self._ws is not None
        await self._ws.send_str(msg if isinstance(msg, str) else json.dumps(msg))

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
    ) -> dict[str, Any]:
        for m in self.messages:
            if pred(m):
                self.messages.remove(m)
                return m
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._waiters = [w for w in self._waiters if w[1] is not fut]

    async def _read(self) -> None:
        assert self._ws is not None
        async for raw in self._ws:
            if raw.type is not aiohttp.WSMsgType.TEXT:
                break
            msg = json.loads(raw.data)
            t = msg["type"]
            if t == "error":
                self.errors.append(msg)
            elif t == "participant_joined":
                self.participants.add(msg["participant"]["identity"])
            elif t == "participant_left":
                self.participants.discard(msg["identity"])
            elif t == "offer" and msg.get("pc") == "subscribe":
                await self._on_sub_offer(msg)
                continue
            for pred, fut in list(self._waiters):
                if not fut.done() and pred(msg):
                    fut.set_result(msg)
                    break
            else:
                self.messages.append(msg)
                del self.messages[:-500]

    async def _on_sub_offer(self, msg: dict[str, Any]) -> None:
        for m in msg.get("tracks", []):
            self._mids[m["mid"]] = (m["identity"], m["track_id"], m["kind"])
        if self.sub_pc is None:
            pc = self.sub_pc = self.rtc.new_peer_connection()

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                if self.passthrough:
                    mark_passthrough(track)
                mid = next((t.mid for t in pc.getTransceivers() if t.receiver.track is track), None)
                self._tasks.append(asyncio.create_task(self._consume(mid or "", track)))

        await self.sub_pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
        self.rtc.prepare(self.sub_pc)
        answer = await self.sub_pc.createAnswer()
        await self.sub_pc.setLocalDescription(answer)
        await self.send(
            {"type": "answer", "pc": "subscribe", "sdp": self.sub_pc.localDescription.sdp}
        )

    async def _consume(self, mid: str, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                ident, tid, kind = self._mids.get(mid, ("?", "?", track.kind))
                rec = self.received.get(tid)
                if rec is None:
                    rec = self.received[tid] = Received(ident, tid, kind)
                if isinstance(frame, EncodedFrame):
                    if len(rec.frames) < self.keep_frames:
                        rec.frames.append(frame)
                    rec.arrivals.append(time.time())
                    if self.on_frame is not None:
                        self.on_frame(rec, frame)
                else:
                    rec.arrivals.append(time.time())

    async def publish(self, tracks: Sequence[tuple[MediaStreamTrack, str]]) -> dict[str, Any]:
        """Publish (track, source) pairs; returns the server's answer message."""
        pc = self.pub_pc = self.rtc.new_peer_connection()
        for track, _ in tracks:
            pc.addTransceiver(track, direction="sendonly")
        self.rtc.prepare(pc)
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        specs = [
            {"mid": t.mid, "kind": tr.kind, "source": src}
            for t, (tr, src) in zip(pc.getTransceivers(), tracks, strict=True)
        ]
        await self.send({"type": "publish", "tracks": specs})
        await self.send({"type": "offer", "pc": "publish", "sdp": pc.localDescription.sdp})
        ans = await self.wait_for(lambda m: m["type"] in ("answer", "error"))
        if ans["type"] == "answer":
            await pc.setRemoteDescription(RTCSessionDescription(ans["sdp"], "answer"))
        return ans

    async def close(self, *, leave: bool = True) -> None:
        if leave and self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self.send({"type": "leave"})
        for t in self._tasks:
            t.cancel()
        for pc in (self.pub_pc, self.sub_pc):
            if pc is not None:
                await pc.close()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._session is not None:
            await self._session.close()
