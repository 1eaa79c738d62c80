"""SDP offer validation for WHIP/WHEP (sans-IO): garbage -> 400, codecs -> 422.

`inspect_offer(text, need=...)` parses an offer with aiortc's parser, checks what
aiortc would otherwise fail on deep inside `setRemoteDescription` (ICE
credentials, DTLS fingerprint, at least one audio/video section) and what our
pipeline can carry (H.264 packetization-mode 1 or VP8 for video, Opus for
audio), and returns a small summary. Errors carry a message meant for the
client.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from ingest.addresses import is_public_text

MAX_SDP_BYTES = 64 * 1024


class SdpError(ValueError):
    """The body is not a usable SDP offer (HTTP 400)."""


class UnsupportedOffer(ValueError):
    """A well-formed offer with nothing we can use (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class OfferedSection:
    kind: str
    """"audio" | "video"."""
    mid: str | None
    direction: str
    codecs: tuple[str, ...]
    """Codec names offered, lower case ("h264", "vp8", "opus", ...)."""
    h264_ok: bool
    """An H.264 format aiortc can negotiate (packetization-mode 1, baseline-compatible)."""


@dataclass(frozen=True, slots=True)
class OfferSummary:
    sections: tuple[OfferedSection, ...]

    @property
    def video(self) -> OfferedSection | None:
        return next((s for s in self.sections if s.kind == "video"), None)

    @property
    def audio(self) -> OfferedSection | None:
        return next((s for s in self.sections if s.kind == "audio"), None)


def inspect_offer(text: str, *, sending: bool) -> OfferSummary:
    """Validate an offer. `sending`: the client sends media (WHIP); else it receives (WHEP).

    WHIP accepts video H.264 or VP8 and audio Opus; WHEP needs H.264 (forwarded as
    is) and Opus. Raises `SdpError` or `UnsupportedOffer`.
    """
    if not text.strip():
        raise SdpError("empty SDP offer")
    if not text.lstrip().startswith("v=0"):
        raise SdpError("the body is not SDP (it must start with v=0)")
    try:
        desc = aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:
        raise SdpError(f"unparsable SDP offer: {exc.__class__.__name__}: {exc}") from None

    # aiortc fails deep inside setRemoteDescription (after a WHIP grant) without
    # unique mids that the BUNDLE group names: refuse such offers here.
    mids = [m.rtp.muxId for m in desc.media]
    if any(not mid for mid in mids):
        raise SdpError("every media section needs an a=mid")
    if len(set(mids)) != len(mids):
        raise SdpError("duplicate a=mid values in the offer")
    for group in desc.group:
        unknown = [str(i) for i in group.items if str(i) not in mids]
        if unknown:
            raise SdpError(f"a=group:{group.semantic} names unknown mids {' '.join(unknown)}")

    sections: list[OfferedSection] = []
    for media in desc.media:
        if media.kind not in ("audio", "video"):
            continue
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise SdpError(f"{media.kind} section without a=ice-ufrag/a=ice-pwd")
        if not media.dtls or not media.dtls.fingerprints:
            raise SdpError(f"{media.kind} section without a=fingerprint")
        names = tuple(c.name.lower() for c in media.rtp.codecs)
        h264_ok = any(
            c.name.lower() == "h264"
            and str(c.parameters.get("packetization-mode", "0")) == "1"
            and str(c.parameters.get("profile-level-id", "42e01f")).lower()[:2] == "42"
            for c in media.rtp.codecs
        )
        direction = media.direction or "sendrecv"
        sections.append(OfferedSection(media.kind, media.rtp.muxId, direction, names, h264_ok))
    if not sections:
        raise SdpError("the offer has no audio or video section")
    if (
        len([s for s in sections if s.kind == "video"]) > 1
        or len([s for s in sections if s.kind == "audio"]) > 1
    ):
        raise UnsupportedOffer("at most one audio and one video section are supported")

    for s in sections:
        if sending and s.direction not in ("sendonly", "sendrecv"):
            raise UnsupportedOffer(f"WHIP offers must send: {s.kind} section is {s.direction}")
        if not sending and s.direction not in ("recvonly", "sendrecv"):
            raise UnsupportedOffer(f"WHEP offers must receive: {s.kind} section is {s.direction}")
        if s.kind == "video":
            if sending and not (s.h264_ok or "vp8" in s.codecs):
                raise UnsupportedOffer(
                    "no supported video codec offered: need H264 (packetization-mode=1, "
                    "baseline/constrained baseline) or VP8; offered "
                    f"{', '.join(s.codecs) or 'none'}"
                )
            if not sending and not s.h264_ok:
                raise UnsupportedOffer(
                    "no supported video codec offered: WHEP playback needs H264 "
                    f"(packetization-mode=1); offered {', '.join(s.codecs) or 'none'}"
                )
        if s.kind == "audio" and "opus" not in s.codecs:
            raise UnsupportedOffer(
                "no supported audio codec offered: need opus; offered "
                f"{', '.join(s.codecs) or 'none'}"
            )
    return OfferSummary(tuple(sections))


def strip_mdns_candidates(text: str, *, allow_private: bool = True, keep_mdns: bool = False) -> str:
    """Drop `a=candidate` lines whose address is an mDNS name (`<uuid>.local`),
    and, unless `allow_private`, those on non-public addresses.

    Browsers hide their host addresses behind mDNS names. A server cannot resolve
    them in general (and aioice's resolver keeps a per-thread lock tied to the
    first event loop); the browser, as the controlling ICE agent, reaches our
    candidates and is then known to us as peer-reflexive, so nothing is lost.
    A candidate on 10.x or 127.0.0.1 that a stranger's offer names would make
    the server send ICE checks into its own network: dropped the same way.
    """
    out = []
    stripped = False
    for line in text.splitlines(keepends=True):
        if line.startswith("a=candidate:"):
            parts = line.split()
            address = parts[4] if len(parts) > 4 else ""
            mdns = address.lower().rstrip(".").endswith(".local")
            if (mdns and not keep_mdns) or (
                not mdns and not allow_private and not is_public_text(address)
            ):
                stripped = True
                continue
        out.append(line)
    if stripped:
        # aioice fails at once on an empty check list after end-of-candidates;
        # without it, it waits for the browser's checks (peer-reflexive pairs).
        out = [line for line in out if not line.startswith("a=end-of-candidates")]
    return "".join(out)


def video_preferences(*, allow_vp8: bool) -> list[RTCRtpCodecCapability]:
    """Codec preferences for a video transceiver: H.264 first, then VP8, with RTX."""
    capabilities = RTCRtpReceiver.getCapabilities("video")
    caps = capabilities.codecs if capabilities is not None else []
    h264 = [c for c in caps if c.mimeType.lower() == "video/h264"]
    vp8 = [c for c in caps if c.mimeType.lower() == "video/vp8"] if allow_vp8 else []
    rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"]
    return h264 + vp8 + rtx


def audio_preferences() -> list[RTCRtpCodecCapability]:
    caps = RTCRtpSender.getCapabilities("audio").codecs
    return [c for c in caps if c.mimeType.lower() == "audio/opus"]
