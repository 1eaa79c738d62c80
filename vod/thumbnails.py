"""Thumbnails: a JPEG of the picture at time t, decoded with PyAV.

``extract_thumbnail(path, offset_s, out_path, max_width=640)`` is a plain
function for a process pool. ``path`` is a local file starting at a keyframe
(for recordings: the init segment plus the segment holding t, written by
``vod.jobs``), ``offset_s`` is t relative to the start of that file. It decodes
from the keyframe and keeps the first frame at or after t (the last one if t
is past the end), scales it to at most ``max_width`` wide (even dimensions,
aspect kept) and encodes a baseline JPEG.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from vod.inputs import MediaPath, open_input

av.logging.set_level(av.logging.ERROR)


def _scaled(width: int, height: int, max_width: int) -> tuple[int, int]:
    if width <= max_width:
        w, h = width, height
    else:
        w, h = max_width, round(height * max_width / width)
    return max(2, w - w % 2), max(2, h - h % 2)


def encode_jpeg(frame: av.VideoFrame, max_width: int = 640, quality: int = 4) -> bytes:
    w, h = _scaled(frame.width, frame.height, max_width)
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width = w
    enc.height = h
    enc.pix_fmt = "yuvj420p"
    enc.time_base = Fraction(1, 25)
    enc.qmin = quality
    enc.qmax = quality
    scaled = frame.reformat(width=w, height=h, format="yuvj420p")
    scaled.pts = 0
    data = b"".join(bytes(p) for p in enc.encode(scaled))
    data += b"".join(bytes(p) for p in enc.encode(None))
    return data


def extract_thumbnail(
    path: MediaPath, offset_s: float, out_path: str, max_width: int = 640
) -> dict[str, Any]:
    """Write the JPEG to ``out_path``; returns {width, height, time_s, size}."""
    chosen: av.VideoFrame | None = None
    chosen_t = 0.0
    with open_input(path) as container:
        if not container.streams.video:
            raise ValueError("no video track")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base: float | None = None
        for frame in container.decode(stream):
            if frame.pts is None or frame.time_base is None:
                continue
            t = float(frame.pts * frame.time_base)
            if base is None:
                base = t
            chosen, chosen_t = frame, t - base
            if t - base >= offset_s - 1e-3:
                break
    if chosen is None:
        raise ValueError("no decodable video frame")
    data = encode_jpeg(chosen, max_width)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_bytes(data)
    w, h = _scaled(chosen.width, chosen.height, max_width)
    return {"width": w, "height": h, "time_s": round(chosen_t, 3), "size": len(data)}
