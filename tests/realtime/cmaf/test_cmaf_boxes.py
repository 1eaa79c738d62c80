"""The CMAF muxer writes well-formed ISO BMFF: init segments and moof+mdat chunks parse
back box by box, carry what the spec says, and real H.264/AAC remuxed through them
decodes with PyAV (FFmpeg)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import av
import pytest

from ingest.hub import PublicationEnded, PublicationStarted, TrackInfo, TrackKind
from realtime.cmaf.boxes import box, full_box, iter_boxes
from realtime.cmaf.codecs import parse_audio_specific_config, parse_avcc, parse_sps
from realtime.cmaf.fragment import (
    NON_SYNC_SAMPLE_FLAGS,
    SYNC_SAMPLE_FLAGS,
    Sample,
    TrackRun,
    build_fragment,
)
from realtime.cmaf.init import CmafTrack, build_init_segment, codecs_string
from realtime.segmenter import Segmenter
from tests.realtime.media import AAC_LC_48K_STEREO, FAKE_AVCC, Collect, demux


def children(
    data: bytes, start: int = 0, end: int | None = None
) -> dict[bytes, list[tuple[int, int]]]:
    out: dict[bytes, list[tuple[int, int]]] = {}
    for typ, s, e in iter_boxes(data, start, end):
        out.setdefault(typ, []).append((s, e))
    return out


def find(data: bytes, path: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """All boxes at a slash path like 'moov/trak/mdia/mdhd' (payload spans)."""
    head, _, rest = path.partition("/")
    spans = children(data, start, end).get(head.encode(), [])
    if not rest:
        return spans
    found: list[tuple[int, int]] = []
    for s, e in spans:
        # sample entries have a fixed header before their child boxes
        skip = {"stsd": 8, "avc1": 78, "mp4a": 28, "dref": 8}.get(head, 0)
        found += find(data, rest, s + skip, e)
    return found


def tracks() -> tuple[CmafTrack, CmafTrack]:
    v = CmafTrack.from_track_info(
        TrackInfo(TrackKind.VIDEO, "h264", 1000, FAKE_AVCC, width=640, height=360), 1
    )
    a = CmafTrack.from_track_info(TrackInfo(TrackKind.AUDIO, "aac", 1000, AAC_LC_48K_STEREO), 2)
    return v, a


def test_box_and_full_box_headers() -> None:
    assert box(b"free", b"abc") == struct.pack(">I4s", 11, b"free") + b"abc"
    fb = full_box(b"tfdt", 1, 0x000203, b"\x00" * 8)
    assert fb[:8] == struct.pack(">I4s", 20, b"tfdt") and fb[8:12] == b"\x01\x00\x02\x03"
    with pytest.raises(ValueError):
        iter_boxes(b"\x00\x00\x00\x10moov")


def test_init_segment_has_cmaf_brands_and_one_trak_per_track() -> None:
    v, a = tracks()
    init = build_init_segment([v, a])
    top = [t for t, _, _ in iter_boxes(init)]
    assert top == [b"ftyp", b"moov"]
    ((fs, fe),) = find(init, "ftyp")
    assert init[fs : fs + 4] == b"iso6" and b"cmfc" in init[fs + 8 : fe]
    assert len(find(init, "moov/mvhd")) == 1
    assert len(find(init, "moov/trak")) == 2
    tkhd_ids = [struct.unpack_from(">I", init, s + 12)[0] for s, _ in find(init, "moov/trak/tkhd")]
    assert tkhd_ids == [1, 2]
    handlers = [init[s + 8 : s + 12] for s, _ in find(init, "moov/trak/mdia/hdlr")]
    assert handlers == [b"vide", b"soun"]
    scales = [
        struct.unpack_from(">I", init, s + 12)[0] for s, _ in find(init, "moov/trak/mdia/mdhd")
    ]
    assert scales == [90_000, 48_000]
    assert len(find(init, "moov/trak/mdia/minf/vmhd")) == 1
    assert len(find(init, "moov/trak/mdia/minf/smhd")) == 1
    assert len(find(init, "moov/trak/mdia/minf/dinf/dref")) == 2
    for empty in ("stts", "stsc", "stco"):
        spans = find(init, f"moov/trak/mdia/minf/stbl/{empty}")
        assert [init[s + 4 : s + 8] for s, _ in spans] == [b"\0\0\0\0"] * 2
    ((cs, ce),) = find(init, "moov/trak/mdia/minf/stbl/stsd/avc1/avcC")
    assert init[cs:ce] == FAKE_AVCC
    ((es, ee),) = find(init, "moov/trak/mdia/minf/stbl/stsd/mp4a/esds")
    assert AAC_LC_48K_STEREO in init[es:ee] and init[es + 4] == 0x03  # ES_Descriptor
    trex = find(init, "moov/mvex/trex")
    assert [struct.unpack_from(">II", init, s + 4) for s, _ in trex] == [(1, 1), (2, 1)]
    assert codecs_string([a, v]) == "avc1.64001f,mp4a.40.2"


def test_fragment_moof_traf_trun_and_data_offsets() -> None:
    runs = [
        TrackRun(
            1,
            2**33 + 5,
            (Sample(b"K" * 10, 3000, True, 6000), Sample(b"P" * 7, 3000, False, -3000)),
        ),
        TrackRun(2, 96_000, (Sample(b"A" * 5, 1024, True),)),
    ]
    frag = build_fragment(42, runs)
    assert [t for t, _, _ in iter_boxes(frag)] == [b"moof", b"mdat"]
    ((ms, _),) = find(frag, "moof/mfhd")
    assert struct.unpack_from(">I", frag, ms + 4)[0] == 42
    tfhds = find(frag, "moof/traf/tfhd")
    assert [struct.unpack_from(">I", frag, s)[0] & 0xFFFFFF for s, _ in tfhds] == [0x020000] * 2
    tfdts = find(frag, "moof/traf/tfdt")
    assert [frag[s] for s, _ in tfdts] == [1, 1]
    assert [struct.unpack_from(">Q", frag, s + 4)[0] for s, _ in tfdts] == [2**33 + 5, 96_000]
    truns = find(frag, "moof/traf/trun")
    s0 = truns[0][0]
    version, flags = frag[s0], struct.unpack_from(">I", frag, s0)[0] & 0xFFFFFF
    assert version == 1 and flags == 0x000F01
    count, offset = struct.unpack_from(">Ii", frag, s0 + 4)
    assert count == 2
    assert frag[offset : offset + 17] == b"K" * 10 + b"P" * 7  # offset is from the moof start
    d1, z1, f1, c1, d2, z2, f2, c2 = struct.unpack_from(">IIIiIIIi", frag, s0 + 12)
    assert (d1, z1, f1, c1) == (3000, 10, SYNC_SAMPLE_FLAGS, 6000)
    assert (d2, z2, f2, c2) == (3000, 7, NON_SYNC_SAMPLE_FLAGS, -3000)
    s1 = truns[1][0]
    _, audio_offset = struct.unpack_from(">Ii", frag, s1 + 4)
    assert frag[audio_offset : audio_offset + 5] == b"A" * 5
    with pytest.raises(ValueError):
        build_fragment(1, [TrackRun(1, 0, ())])


def test_codec_parsers_on_real_configs(av_flv: Path) -> None:
    d = demux(av_flv)
    video = next(t for t in d.tracks if t.kind is TrackKind.VIDEO)
    audio = next(t for t in d.tracks if t.kind is TrackKind.AUDIO)
    avc = parse_avcc(video.config)
    assert avc.codec_string.startswith("avc1.64") and avc.nal_length_size == 4
    sps = parse_sps(avc.sps[0])
    assert (sps.width, sps.height) == (320, 240)
    assert sps.frame_rate == pytest.approx(30.0)
    asc = parse_audio_specific_config(audio.config)
    assert (asc.object_type, asc.sample_rate, asc.channels, asc.codec_string) == (
        2,
        48000,
        1,
        "mp4a.40.2",
    )


def test_real_media_remuxed_by_our_muxer_decodes_with_pyav(av_flv: Path) -> None:
    d = demux(av_flv)
    out = Collect()
    seg = Segmenter(None, out, part_target_s=0.2, segment_target_s=1.0)
    seg.feed(PublicationStarted(1, d.tracks, "test", 0.0))
    for u in d.units:
        seg.feed(u)
    seg.feed(PublicationEnded(1, "done"))
    blob = out.inits[0].data + b"".join(p.data for p in out.parts)
    frames = {"video": 0, "audio": 0}
    with av.open(io.BytesIO(blob), format="mp4") as c:
        vs = c.streams.video[0]
        assert (vs.codec_context.width, vs.codec_context.height) == (320, 240)
        for frame in c.decode(video=0, audio=0):
            frames["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
    source_video = sum(1 for u in d.units if u.kind is TrackKind.VIDEO)
    source_audio = sum(1 for u in d.units if u.kind is TrackKind.AUDIO)
    assert frames["video"] == source_video
    assert frames["audio"] >= source_audio - 2
