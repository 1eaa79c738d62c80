"""CMAF initialization segments (ftyp + moov) for H.264, HEVC, AV1 and AAC tracks.

Owns `CmafTrack` (a hub `TrackInfo` resolved into what the muxer needs: track
id, media timescale, codec string, picture size, audio rate) and
`build_init_segment`, which writes ftyp (iso6, cmfc) and a moov with mvhd, one
trak per track (tkhd, mdia/mdhd/hdlr/minf with vmhd|smhd, dinf, stbl with
avc1+avcC, hvc1+hvcC, av01+av1C or mp4a+esds and empty sample tables) and
mvex/trex.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest import hevc_av1
from ingest.hub import TrackInfo, TrackKind
from ingest.media_error import MediaError
from realtime.cmaf.boxes import (
    UNITY_MATRIX,
    box,
    fixed8_8,
    fixed16_16,
    full_box,
    language_code,
    u8,
    u16,
    u32,
)
from realtime.cmaf.codecs import parse_audio_specific_config, parse_avcc, parse_sps

VIDEO_TIMESCALE = 90_000


@dataclass(frozen=True, slots=True)
class CmafTrack:
    """One track as packaged: id in the moov, media timescale, codec details."""

    track_id: int
    kind: TrackKind
    codec: str
    """RFC 6381 codec string (avc1.PPCCLL, mp4a.40.N)."""
    timescale: int
    """Media timescale of the packaged track (90 kHz video, sample rate audio)."""
    config: bytes
    width: int = 0
    height: int = 0
    frame_rate: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    bitrate: int = 0

    @staticmethod
    def from_track_info(info: TrackInfo, track_id: int) -> CmafTrack:
        """Resolve a hub track; raises ValueError for codecs this muxer cannot package."""
        if info.kind is TrackKind.VIDEO:
            if info.codec in ("hevc", "av1"):
                return _hevc_or_av1(info, track_id)
            if info.codec != "h264":
                raise ValueError(f"unsupported video codec {info.codec!r}")
            avc = parse_avcc(info.config)
            width, height, fps = info.width, info.height, 0.0
            if avc.sps:
                try:
                    sps = parse_sps(avc.sps[0])
                    width, height, fps = sps.width, sps.height, sps.frame_rate
                except ValueError:
                    pass
            return CmafTrack(
                track_id,
                info.kind,
                avc.codec_string,
                VIDEO_TIMESCALE,
                info.config,
                width=width,
                height=height,
                frame_rate=fps,
                bitrate=info.bitrate,
            )
        if info.codec != "aac":
            raise ValueError(f"unsupported audio codec {info.codec!r}")
        asc = parse_audio_specific_config(info.config)
        return CmafTrack(
            track_id,
            info.kind,
            asc.codec_string,
            asc.sample_rate,
            info.config,
            sample_rate=asc.sample_rate,
            channels=asc.channels or info.channels or 2,
            bitrate=info.bitrate,
        )


def _hevc_or_av1(info: TrackInfo, track_id: int) -> CmafTrack:
    try:
        if info.codec == "hevc":
            codec = hevc_av1.parse_hvcc(info.config).codec_string
            width, height = info.width, info.height
        else:
            av1 = hevc_av1.parse_av1c(info.config)
            codec = av1.codec_string
            width, height = av1.width or info.width, av1.height or info.height
    except MediaError as exc:
        raise ValueError(str(exc)) from exc
    return CmafTrack(
        track_id,
        info.kind,
        codec,
        VIDEO_TIMESCALE,
        info.config,
        width=width,
        height=height,
        bitrate=info.bitrate,
    )


def ftyp() -> bytes:
    return box(b"ftyp", b"iso6", u32(0), b"iso6", b"cmfc", b"isom", b"mp41")


def _mvhd(next_track_id: int) -> bytes:
    return full_box(
        b"mvhd",
        0,
        0,
        u32(0),
        u32(0),
        u32(1000),
        u32(0),
        fixed16_16(1.0),
        fixed8_8(1.0),
        bytes(10),
        UNITY_MATRIX,
        bytes(24),
        u32(next_track_id),
    )


def _tkhd(t: CmafTrack) -> bytes:
    volume = fixed8_8(1.0) if t.kind is TrackKind.AUDIO else u16(0)
    return full_box(
        b"tkhd",
        0,
        0x000003,
        u32(0),
        u32(0),
        u32(t.track_id),
        u32(0),
        u32(0),
        bytes(8),
        u16(0),
        u16(0),
        volume,
        u16(0),
        UNITY_MATRIX,
        fixed16_16(t.width),
        fixed16_16(t.height),
    )


def _mdhd(t: CmafTrack) -> bytes:
    return full_box(
        b"mdhd", 0, 0, u32(0), u32(0), u32(t.timescale), u32(0), language_code(), u16(0)
    )


def _hdlr(t: CmafTrack) -> bytes:
    handler, name = (
        (b"vide", b"VideoHandler\0") if t.kind is TrackKind.VIDEO else (b"soun", b"SoundHandler\0")
    )
    return full_box(b"hdlr", 0, 0, u32(0), handler, bytes(12), name)


def _dinf() -> bytes:
    return box(b"dinf", full_box(b"dref", 0, 0, u32(1), full_box(b"url ", 0, 1)))


SAMPLE_ENTRIES = {
    "avc1": (b"avc1", b"avcC"),
    "hvc1": (b"hvc1", b"hvcC"),
    "av01": (b"av01", b"av1C"),
}
"""Codec string prefix → (visual sample entry, its configuration box)."""


def _visual_entry(t: CmafTrack) -> bytes:
    """avc1+avcC, hvc1+hvcC or av01+av1C (ISO/IEC 14496-15, AV1-ISOBMFF)."""
    entry, config = SAMPLE_ENTRIES[t.codec.split(".")[0]]
    compressor = bytes(32)
    return box(
        entry,
        bytes(6),
        u16(1),
        u16(0),
        u16(0),
        bytes(12),
        u16(t.width),
        u16(t.height),
        fixed16_16(72.0),
        fixed16_16(72.0),
        u32(0),
        u16(1),
        compressor,
        u16(0x0018),
        u16(0xFFFF),
        box(config, t.config),
    )


def _descriptor(tag: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 0x80:
        return u8(tag) + u8(n) + payload
    size = bytes(
        [0x80 | ((n >> 21) & 0x7F), 0x80 | ((n >> 14) & 0x7F), 0x80 | ((n >> 7) & 0x7F), n & 0x7F]
    )
    return u8(tag) + size + payload


def esds(config: bytes, track_id: int, bitrate: int = 0) -> bytes:
    """An esds box carrying an AudioSpecificConfig (ISO/IEC 14496-1 ES_Descriptor)."""
    dsi = _descriptor(0x05, config)
    dec_config = _descriptor(
        0x04,
        u8(0x40) + u8(0x15) + bytes(3) + u32(bitrate) + u32(bitrate) + dsi,
    )
    sl = _descriptor(0x06, b"\x02")
    es = _descriptor(0x03, u16(track_id & 0xFFFF) + u8(0) + dec_config + sl)
    return full_box(b"esds", 0, 0, es)


def _mp4a(t: CmafTrack) -> bytes:
    rate = t.sample_rate if t.sample_rate < 65536 else 0
    return box(
        b"mp4a",
        bytes(6),
        u16(1),
        bytes(8),
        u16(t.channels),
        u16(16),
        u16(0),
        u16(0),
        u32(rate << 16),
        esds(t.config, t.track_id, t.bitrate),
    )


def _stbl(t: CmafTrack) -> bytes:
    entry = _visual_entry(t) if t.kind is TrackKind.VIDEO else _mp4a(t)
    return box(
        b"stbl",
        full_box(b"stsd", 0, 0, u32(1), entry),
        full_box(b"stts", 0, 0, u32(0)),
        full_box(b"stsc", 0, 0, u32(0)),
        full_box(b"stsz", 0, 0, u32(0), u32(0)),
        full_box(b"stco", 0, 0, u32(0)),
    )


def _trak(t: CmafTrack) -> bytes:
    media_header = (
        full_box(b"vmhd", 0, 1, u16(0), bytes(6))
        if t.kind is TrackKind.VIDEO
        else full_box(b"smhd", 0, 0, u16(0), u16(0))
    )
    minf = box(b"minf", media_header, _dinf(), _stbl(t))
    mdia = box(b"mdia", _mdhd(t), _hdlr(t), minf)
    return box(b"trak", _tkhd(t), mdia)


def _trex(t: CmafTrack) -> bytes:
    return full_box(b"trex", 0, 0, u32(t.track_id), u32(1), u32(0), u32(0), u32(0))


def build_init_segment(tracks: tuple[CmafTrack, ...] | list[CmafTrack]) -> bytes:
    """ftyp + moov for the given tracks (track ids must be distinct, from 1)."""
    if not tracks:
        raise ValueError("an init segment needs at least one track")
    next_id = max(t.track_id for t in tracks) + 1
    moov = box(
        b"moov",
        _mvhd(next_id),
        *(_trak(t) for t in tracks),
        box(b"mvex", *(_trex(t) for t in tracks)),
    )
    return ftyp() + moov


def codecs_string(tracks: tuple[CmafTrack, ...] | list[CmafTrack]) -> str:
    """The CODECS attribute: video first, then audio."""
    ordered = sorted(tracks, key=lambda t: 0 if t.kind is TrackKind.VIDEO else 1)
    return ",".join(t.codec for t in ordered)
