"""Helpers for the WebRTC service e2e tests (tests/e2e/test_webrtc_service.py):
a real ffmpeg RTMP publisher without B-frames, raw WHIP/WHEP POSTs, SDP offers
made by aiortc, decoded-frame checks, LL-HLS part fetching and event-log reads.

    proc = rtmp_broadcast(rtmp_url, seconds=90, log=path)   # subprocess.Popen
    offer = await sdp_offer(video_codec="video/H264")        # a real aiortc offer
    status, headers, body = await post_sdp(url, offer, token="...")
    frames = await recv_frames(track, 10, within=20)
    blob = await llhls_init_and_parts(base, playback_id)     # fMP4 bytes
    events = await api.events({ls_id, asset_id})
"""

from __future__ import annotations

import asyncio
import itertools
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import av
import m3u8
from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamTrack

from ingest.webrtc.config import WebRtcConfig, prepare_ice
from tests.webrtc._media import PatternVideoTrack, ToneAudioTrack

CLIENT_CONFIG = WebRtcConfig.loopback()
"""aiortc clients in the tests gather only on 127.0.0.1."""


def rtmp_args(url: str, seconds: float, size: str = "640x360") -> list[str]:
    """Debian ffmpeg: testsrc2 + sine, libx264 without B-frames, GOP 30, over RTMP."""
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "warning", "-nostdin",
        "-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
        "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", f"{seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-bf", "0", "-g", "30", "-keyint_min", "30", "-sc_threshold", "0",
        "-pix_fmt", "yuv420p", "-b:v", "600k",
        "-c:a", "aac", "-b:a", "64k", "-ar", "48000",
        "-f", "flv", url,
    ]  # fmt: skip


def rtmp_broadcast(url: str, seconds: float, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the RTMP publisher as a child process (end it with `_media.stop_popen`)."""
    err = log.open("ab") if log is not None else None
    try:
        return subprocess.Popen(
            rtmp_args(url, seconds),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err if err is not None else subprocess.DEVNULL,
        )
    finally:
        if err is not None:
            err.close()


async def sdp_offer(video_codec: str | None = "video/H264", audio: bool = True) -> str:
    """A real aiortc sendonly offer (video restricted to `video_codec`), then closed."""
    pc = RTCPeerConnection(CLIENT_CONFIG.rtc_configuration())
    try:
        if video_codec:
            t = pc.addTransceiver(PatternVideoTrack(), direction="sendonly")
            caps = RTCRtpSender.getCapabilities("video").codecs
            t.setCodecPreferences([c for c in caps if c.mimeType == video_codec])
        if audio:
            pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
        prepare_ice(pc, CLIENT_CONFIG)
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def recvonly_offer() -> str:
    """A real aiortc recvonly (WHEP) offer for video + audio, then closed."""
    pc = RTCPeerConnection(CLIENT_CONFIG.rtc_configuration())
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        prepare_ice(pc, CLIENT_CONFIG)
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def post_sdp(
    url: str, body: str, *, token: str | None = None, content_type: str = "application/sdp"
) -> tuple[int, dict[str, str], str]:
    """POST an SDP body (WHIP or WHEP) → (status, headers, body text)."""
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.text()


def first_video_codec(sdp: str) -> str:
    """The encoding name of the first payload type of the first m=video section."""
    section = sdp[sdp.index("m=video") :]
    pt = section.split("\r\n", 1)[0].split()[3]
    m = re.search(rf"a=rtpmap:{pt} ([^/\r\n]+)/", section)
    assert m, section
    return m.group(1)


def answer_candidates(sdp: str) -> list[str]:
    """The connection addresses of the `a=candidate:` lines of an SDP."""
    return [ln.split()[4] for ln in sdp.splitlines() if ln.startswith("a=candidate:")]


async def recv_frames(track: MediaStreamTrack, n: int, *, within: float) -> list[Any]:
    """The next `n` decoded frames of a remote aiortc track."""
    frames: list[Any] = []

    async def run() -> None:
        while len(frames) < n:
            frames.append(await track.recv())

    await asyncio.wait_for(run(), within)
    return frames


def mean_luma(frame: av.VideoFrame) -> float:
    """The mean of the Y plane (0-255) of a decoded video frame."""
    gray = frame.to_ndarray(format="gray")
    return float(gray.mean())


async def llhls_init_and_parts(
    base: str, playback_id: str, *, within: float = 30.0
) -> tuple[bytes, str, str]:
    """Poll the live LL-HLS playlists of `playback_id` until a segment has closed,
    then fetch the init section and every listed part.

    Returns (init + parts concatenated, the multivariant CODECS, the media playlist)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    codecs = ""
    text = ""
    async with aiohttp.ClientSession() as http:
        media_url = None
        while media_url is None:
            async with http.get(f"{base}/play/{playback_id}.m3u8") as r:
                if r.status == 200:
                    mv = m3u8.loads(await r.text(), uri=f"{base}/play/{playback_id}.m3u8")
                    if mv.is_variant and mv.playlists:
                        media_url = mv.playlists[0].absolute_uri
                        codecs = mv.playlists[0].stream_info.codecs or ""
            if media_url is None:
                if loop.time() > deadline:
                    raise TimeoutError(f"no LL-HLS playlist for {playback_id}")
                await asyncio.sleep(0.2)
        while True:
            async with http.get(media_url) as r:
                text = await r.text() if r.status == 200 else ""
            if "#EXTINF" in text and "#EXT-X-PART:" in text:
                break
            if loop.time() > deadline:
                raise TimeoutError(f"no closed segment in {media_url}: {text}")
            await asyncio.sleep(0.2)
        init = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text)[0]
        first_msn = m3u8.loads(text).media_sequence or 0
        # parts of the oldest listed segment onwards (complete, so they decode from its keyframe)
        parts = re.findall(r'#EXT-X-PART:[^\n]*URI="([^"]+)"', text)
        assert parts, text
        blob = b""
        for uri in [init, *parts]:
            async with http.get(_join(media_url, uri)) as r:
                assert r.status == 200, (uri, r.status, first_msn)
                blob += await r.read()
    return blob, codecs, text


def _join(base_url: str, uri: str) -> str:
    from urllib.parse import urljoin

    return urljoin(base_url, uri)


async def media_playlist(base: str, playback_id: str) -> str:
    """The current live media playlist text of `playback_id`."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/play/{playback_id}.m3u8") as r:
            assert r.status == 200, await r.text()
            mv = m3u8.loads(await r.text(), uri=f"{base}/play/{playback_id}.m3u8")
        async with http.get(mv.playlists[0].absolute_uri) as r:
            assert r.status == 200
            return await r.text()


def part_count(text: str) -> int:
    """A monotonic position of the live edge: media sequence * 1000 + listed parts."""
    msn = m3u8.loads(text).media_sequence or 0
    segments = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))
    trailing = 0
    for ln in reversed(text.splitlines()):
        if ln and not ln.startswith("#"):
            break
        if ln.startswith("#EXT-X-PART:"):
            trailing += 1
    return (msn + segments) * 1000 + trailing


def increasing(values: Iterable[int | None]) -> bool:
    """Strictly increasing (and none missing)."""
    v = list(values)
    ints = [x for x in v if x is not None]
    return len(ints) == len(v) and all(a < b for a, b in itertools.pairwise(ints))
