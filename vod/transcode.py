"""Uploads into assets: probe, then remux (H.264+AAC) or transcode (anything else) to CMAF HLS.

``process_upload(src_path, out_dir)`` is the plain function a process pool runs:
it probes the file (``vod.probe``); not a video → ``{"ok": False, "error": reason}``;
H.264 video with AAC (or no) audio → packet copy into CMAF HLS; anything else
(VP9/Opus WebM, HEVC, ...) → decode and encode H.264 (libx264 ``veryfast``,
fixed 2 s GOP so segments are 2 s) + AAC-LC 128 kbit/s 48 kHz stereo, then CMAF
HLS. The result names the local init and segment files for ``vod.jobs`` to
store under the asset's prefix with a manifest like a recording's.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from vod.inputs import open_input
from vod.media import (
    HLS_SEGMENT_S,
    Source,
    open_hls_output,
    package_cmaf,
    read_packaged,
)
from vod.probe import probe_file

av.logging.set_level(av.logging.ERROR)

MAX_HEIGHT = 1080


def process_upload(
    src_path: str,
    out_dir: str,
    *,
    preset: str = "veryfast",
    progress_path: str | None = None,
) -> dict[str, Any]:
    """Probe and package an uploaded file. Never raises for bad input.

    ``progress_path``: a transcode writes its percent done there about once a
    second (the async side polls it; a process pool has no cheap callback)."""
    probe = probe_file(src_path)
    if not probe.ok:
        return {"ok": False, "error": probe.error, "probe": asdict(probe)}
    try:
        if probe.remuxable:
            packaged = package_cmaf([Source(src_path, 0.0)], out_dir)
            mode = "remux"
        else:
            packaged = transcode_to_cmaf(
                src_path,
                out_dir,
                preset=preset,
                progress_path=progress_path,
                duration_hint=probe.duration_s,
            )
            mode = "transcode"
    except (av.error.FFmpegError, ValueError) as exc:
        return {"ok": False, "error": f"could not process the video: {exc}", "probe": asdict(probe)}
    return {"ok": True, "mode": mode, "packaged": packaged, "probe": asdict(probe)}


def _write_progress(path: str, percent: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(percent))
    os.replace(tmp, path)


def read_progress(path: str | Path) -> int | None:
    """What a running transcode last wrote to its ``progress_path`` (0..100)."""
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _even(x: int) -> int:
    return max(2, x - x % 2)


def transcode_to_cmaf(
    src_path: str,
    out_dir: str,
    *,
    preset: str = "veryfast",
    segment_s: float = HLS_SEGMENT_S,
    max_height: int = MAX_HEIGHT,
    threads: int = 0,
    progress_path: str | None = None,
    duration_hint: float = 0.0,
) -> dict[str, Any]:
    """Decode ``src_path`` and encode H.264/AAC CMAF HLS into ``out_dir``."""
    inp = open_input(src_path)
    output = open_hls_output(out_dir, segment_s)
    try:
        in_v = inp.streams.video[0]
        in_a = inp.streams.audio[0] if inp.streams.audio else None
        in_v.thread_type = "AUTO"
        rate = in_v.average_rate or in_v.guessed_rate or Fraction(30)
        fps = float(rate) if rate else 30.0
        if not 1 <= fps <= 120:
            fps, rate = 30.0, Fraction(30)
        width, height = in_v.codec_context.width, in_v.codec_context.height
        if height > max_height:
            width, height = round(width * max_height / height), max_height
        width, height = _even(width), _even(height)
        gop = max(1, round(fps * segment_s))
        vs = output.add_stream(
            "libx264",
            rate=Fraction(rate).limit_denominator(1001),
            options={
                "preset": preset,
                "crf": "23",
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
            },
        )
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.time_base = in_v.time_base or Fraction(1, 90000)
        if threads:
            vs.codec_context.thread_count = threads
        as_: Any = None
        resampler: Any = None
        if in_a is not None:
            as_ = output.add_stream("aac", rate=48000)
            as_.codec_context.layout = "stereo"
            as_.codec_context.bit_rate = 128_000
            resampler = av.AudioResampler(
                format="fltp", layout="stereo", rate=48000, frame_size=1024
            )
        samples = 0
        audio_t0: float | None = None
        video_t0: float | None = None
        streams = [s for s in (in_v, in_a) if s is not None]
        last_report = time.monotonic()
        for packet in inp.demux(streams):
            if progress_path and duration_hint > 0 and time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                if packet.pts is not None and packet.time_base is not None:
                    done = float(packet.pts * packet.time_base) / duration_hint
                    _write_progress(progress_path, int(max(0.0, min(done, 1.0)) * 100))
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    if frame.pts is None or frame.time_base is None:
                        continue
                    if video_t0 is None:
                        video_t0 = float(frame.pts * frame.time_base)
                    out = frame.reformat(width=width, height=height, format="yuv420p")
                    out.pts = frame.pts - round(video_t0 / frame.time_base)
                    out.time_base = frame.time_base
                    for p in vs.encode(out):
                        output.mux(p)
                elif isinstance(frame, av.AudioFrame) and as_ is not None:
                    if audio_t0 is None:
                        audio_t0 = (
                            float(frame.pts * frame.time_base)
                            if frame.pts is not None and frame.time_base is not None
                            else 0.0
                        )
                        lead = audio_t0 - (video_t0 or audio_t0)
                        samples = max(0, round(lead * 48000))
                    for rf in resampler.resample(frame):
                        rf.pts = samples
                        rf.time_base = Fraction(1, 48000)
                        samples += rf.samples
                        for p in as_.encode(rf):
                            output.mux(p)
        for p in vs.encode(None):
            output.mux(p)
        if as_ is not None:
            for rf in resampler.resample(None):
                rf.pts = samples
                rf.time_base = Fraction(1, 48000)
                samples += rf.samples
                for p in as_.encode(rf):
                    output.mux(p)
            for p in as_.encode(None):
                output.mux(p)
    finally:
        output.close()
        inp.close()
    return read_packaged(Path(out_dir)).to_dict()
