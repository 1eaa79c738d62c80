"""Minimal WHIP/WHEP clients on aiortc, for tests, benchmarks and tooling.

`whip_publish` sends the given tracks (H.264 preferred) to a WHIP endpoint;
`whep_play` receives from a WHEP endpoint. Both return the peer connection and
the session URL (to `DELETE`).
"""

from __future__ import annotations

from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from ingest.webrtc.config import WebRtcConfig, new_peer_connection, prepare_ice


class HttpStatusError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


async def _post_offer(
    pc: RTCPeerConnection, url: str, token: str | None, config: WebRtcConfig
) -> str:
    prepare_ice(pc, config)
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=pc.localDescription.sdp, headers=headers) as resp:
            body = await resp.text()
            if resp.status != 201:
                await pc.close()
                raise HttpStatusError(resp.status, body)
            # after a redirect (the stream plays from another node) the session
            # lives where the answer came from
            location = urljoin(str(resp.url), resp.headers["Location"])
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return location


async def whip_publish(
    url: str,
    stream_key: str,
    tracks: list[MediaStreamTrack],
    config: WebRtcConfig,
    *,
    video_codec: str = "video/H264",
) -> tuple[RTCPeerConnection, str]:
    pc = new_peer_connection(config)
    for track in tracks:
        t = pc.addTransceiver(track, direction="sendonly")
        if track.kind == "video":
            caps = RTCRtpSender.getCapabilities("video").codecs
            t.setCodecPreferences([c for c in caps if c.mimeType == video_codec])
    return pc, await _post_offer(pc, url, stream_key, config)


async def whep_play(
    url: str, config: WebRtcConfig, *, token: str | None = None, audio: bool = True
) -> tuple[RTCPeerConnection, str]:
    pc = new_peer_connection(config)
    pc.addTransceiver("video", direction="recvonly")
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    return pc, await _post_offer(pc, url, token, config)


async def delete_session(location: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.delete(location, headers=headers) as resp:
        return resp.status
