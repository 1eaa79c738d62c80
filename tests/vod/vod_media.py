"""Helpers turning ffmpeg's fMP4 HLS output into the segmenter's Segment objects."""

from __future__ import annotations

from pathlib import Path

from realtime.segments import InitSegment, Part, Segment


def hls_entries(hls_dir: Path) -> list[tuple[float, Path]]:
    out: list[tuple[float, Path]] = []
    duration = 0.0
    for line in (hls_dir / "index.m3u8").read_text().splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line and not line.startswith("#"):
            out.append((duration, hls_dir / line))
    return out


def segments_from_hls(
    hls_dir: Path,
    *,
    generation: int = 0,
    msn0: int = 0,
    pdt0: float = 1_800_000_000.0,
    first_is_discontinuity: bool = False,
) -> tuple[InitSegment, list[Segment]]:
    init = InitSegment(
        generation=generation,
        data=(hls_dir / "init.mp4").read_bytes(),
        codecs="avc1.64000d,mp4a.40.2",
        width=320,
        height=180,
        bandwidth=500_000,
    )
    segs: list[Segment] = []
    t = 0.0
    for i, (duration, path) in enumerate(hls_entries(hls_dir)):
        data = path.read_bytes()
        msn = msn0 + i
        segs.append(
            Segment(
                msn=msn,
                duration=duration,
                parts=(Part(msn, 0, data, duration, True),),
                program_date_time=pdt0 + t,
                discontinuity=first_is_discontinuity and i == 0,
                generation=generation,
                init=init,
                start_pts=t,
            )
        )
        t += duration
    return init, segs


def synthetic(
    n: int,
    *,
    generation: int = 0,
    msn0: int = 0,
    pdt0: float = 1_000.0,
    duration: float = 2.0,
    payload: bytes = b"moof+mdat",
    discontinuity_first: bool = False,
) -> tuple[InitSegment, list[Segment]]:
    init = InitSegment(
        generation,
        b"ftyp+moov/" + bytes([generation]),
        "avc1.64001f,mp4a.40.2",
        1280,
        720,
        3_000_000,
    )
    segs = [
        Segment(
            msn=msn0 + i,
            duration=duration,
            parts=(Part(msn0 + i, 0, payload + bytes([i % 256]), duration, True),),
            program_date_time=pdt0 + i * duration,
            discontinuity=discontinuity_first and i == 0,
            generation=generation,
            init=init,
            start_pts=i * duration,
        )
        for i in range(n)
    ]
    return init, segs
