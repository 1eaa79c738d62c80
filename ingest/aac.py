"""AAC helpers: the AudioSpecificConfig (ISO 14496-3 1.6.2.1) and codec strings.

Owns reading the sample rate, channel count, object type and frame length from
an AudioSpecificConfig: FLV's own sound-rate bits say 44.1 kHz for every AAC
stream, so this is the only trustworthy source. Malformed input raises
`AacError` (a `MediaError`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.h264 import BitReader, H264Error
from ingest.media_error import MediaError


class AacError(MediaError):
    """A malformed or implausible AudioSpecificConfig."""


SAMPLE_RATES = (
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
)

_GA_OBJECT_TYPES = frozenset({1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23})


@dataclass(frozen=True, slots=True)
class AacConfig:
    object_type: int
    """2 = AAC-LC, 5 = HE-AAC (SBR), 29 = HE-AACv2 (PS)."""
    sample_rate: int
    """The core sampling rate: the one AAC frames are counted in."""
    channels: int
    frame_length: int
    """Samples per frame at `sample_rate`: 1024 (or 960)."""


def parse_audio_specific_config(asc: bytes) -> AacConfig:
    try:
        return _parse_audio_specific_config(asc)
    except H264Error as exc:  # the bit reader ran out
        raise AacError(f"AudioSpecificConfig: {exc}") from None


def _parse_audio_specific_config(asc: bytes) -> AacConfig:
    if len(asc) < 2:
        raise AacError("AudioSpecificConfig: too short")
    r = BitReader(bytes(asc))
    aot = r.u(5)
    if aot == 31:
        aot = 32 + r.u(6)
    if aot == 0:
        raise AacError("AudioSpecificConfig: object type 0")
    index = r.u(4)
    if index == 0xF:
        rate = r.u(24)
    elif index < len(SAMPLE_RATES):
        rate = SAMPLE_RATES[index]
    else:
        raise AacError(f"AudioSpecificConfig: bad sampling frequency index {index}")
    if not 1000 <= rate <= 192000:
        raise AacError(f"AudioSpecificConfig: implausible sample rate {rate}")
    channel_config = r.u(4)
    channels = {0: 2, 7: 8}.get(channel_config, channel_config)
    if channels > 8:
        channels = 2
    frame_length = 1024
    core_aot = aot
    if aot in (5, 29):
        # Explicit SBR/PS signalling: extension rate, then the core object type.
        ext_index = r.u(4)
        if ext_index == 0xF:
            r.u(24)
        core_aot = r.u(5)
    if core_aot in _GA_OBJECT_TYPES:
        try:
            frame_length = 960 if r.u(1) else 1024
        except H264Error:  # the bit reader ran out: the config ends here
            frame_length = 1024
    return AacConfig(aot, rate, channels, frame_length)


def codec_string(asc: bytes) -> str:
    """RFC 6381 codec string, e.g. "mp4a.40.2"."""
    return f"mp4a.40.{parse_audio_specific_config(asc).object_type}"


@dataclass(frozen=True, slots=True)
class AdtsFrame:
    """One ADTS frame (ISO 14496-3 1.A.2), as MPEG-TS carries AAC."""

    config: bytes
    """The AudioSpecificConfig the header stands for (2 bytes)."""
    sample_rate: int
    channels: int
    payload: bytes
    """The raw AAC frame, header (and CRC) removed."""
    size: int
    """Bytes of the whole ADTS frame (where the next one starts)."""


def parse_adts(data: bytes) -> AdtsFrame:
    """The single raw frame of an ADTS frame; `AacError` for anything else (a
    frame of several raw data blocks, a bad sync word, a length that overruns)."""
    if len(data) < 7 or data[0] != 0xFF or data[1] & 0xF6 != 0xF0:
        raise AacError("ADTS: no sync word")
    protection_absent = data[1] & 1
    profile = data[2] >> 6
    rate_index = (data[2] >> 2) & 0x0F
    channels = ((data[2] & 1) << 2) | (data[3] >> 6)
    length = ((data[3] & 3) << 11) | (data[4] << 3) | (data[5] >> 5)
    blocks = (data[6] & 3) + 1
    header = 7 if protection_absent else 9
    if rate_index >= len(SAMPLE_RATES):
        raise AacError(f"ADTS: sampling frequency index {rate_index}")
    if channels == 0:
        raise AacError("ADTS: channel configuration 0 (a PCE) is not supported")
    if blocks != 1:
        raise AacError(f"ADTS: {blocks} raw data blocks in one frame")
    if length < header or length > len(data):
        raise AacError(f"ADTS: frame length {length} of {len(data)} bytes")
    object_type = profile + 1
    asc = ((object_type << 11) | (rate_index << 7) | (channels << 3)).to_bytes(2, "big")
    return AdtsFrame(asc, SAMPLE_RATES[rate_index], channels, bytes(data[header:length]), length)
