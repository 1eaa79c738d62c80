"""AudioSpecificConfig parsing: the sample rate FLV does not tell."""

from __future__ import annotations

import pytest

from ingest import aac


@pytest.mark.parametrize(
    ("hexdata", "aot", "rate", "channels", "frame"),
    [
        ("1190", 2, 48000, 2, 1024),  # ffmpeg aac, 48 kHz stereo
        ("1188", 2, 48000, 1, 1024),  # 48 kHz mono
        ("1210", 2, 44100, 2, 1024),
        ("1208", 2, 44100, 1, 1024),  # GStreamer avenc_aac mono
        ("1214", 2, 44100, 2, 960),  # frameLengthFlag set
        ("1588", 2, 8000, 1, 1024),
        # HE-AAC explicit: aot 5, core 24 kHz (index 6), mono, SBR 48 kHz (index 3), core aot 2
        (format(int("00101011000010011000100000000000", 2), "08x"), 5, 24000, 1, 1024),
    ],
)
def test_audio_specific_config(
    hexdata: str, aot: int, rate: int, channels: int, frame: int
) -> None:
    cfg = aac.parse_audio_specific_config(bytes.fromhex(hexdata))
    got = (cfg.object_type, cfg.sample_rate, cfg.channels, cfg.frame_length)
    assert got == (aot, rate, channels, frame)


def test_explicit_sample_rate() -> None:
    # AOT 2, index 15, 24-bit rate 48000, channel config 2
    bits = "00010" + "1111" + format(48000, "024b") + "0010" + "000"
    data = int(bits, 2).to_bytes((len(bits) + 7) // 8, "big")
    cfg = aac.parse_audio_specific_config(data)
    assert (cfg.sample_rate, cfg.channels) == (48000, 2)


def test_codec_string() -> None:
    assert aac.codec_string(bytes.fromhex("1190")) == "mp4a.40.2"


@pytest.mark.parametrize("hexdata", ["", "00", "0000", "17", "1f00"])
def test_bad_configs(hexdata: str) -> None:
    with pytest.raises(aac.AacError):
        aac.parse_audio_specific_config(bytes.fromhex(hexdata))
