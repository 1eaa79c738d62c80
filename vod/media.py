"""The PyAV remux engine shared by MP4 export, clips and upload packaging.

Everything here is a plain synchronous function on local files, so it can run in
a ``ProcessPoolExecutor`` (never on the event loop).

An asset on local disk is a list of ``Source(path, offset_s)``: each file is a
playable container (for recordings: one generation's init segment followed by
its consecutive media segments, written by ``vod.jobs``), ``offset_s`` is where
the file's first segment starts on the asset's timeline. ``copy_packets`` reads
them in order and writes their packets, re-timed onto one continuous timeline
(reconnect gaps removed, as in the VOD playlist), into one output container:
an MP4 (``mp4.remux_to_mp4``) or CMAF HLS (``package_cmaf``). An optional
window keeps ``[start_s, end_s)``, starting at the video keyframe at or before
``start_s`` so nothing is re-encoded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from av.container import OutputContainer

from vod.inputs import MediaPath, open_input
from vod.probe import init_codecs

av.logging.set_level(av.logging.ERROR)

HLS_SEGMENT_S = 2.0


@dataclass(frozen=True, slots=True)
class Source:
    path: MediaPath
    offset_s: float = 0.0


@dataclass(frozen=True, slots=True)
class CopyStats:
    duration_s: float
    video_packets: int
    audio_packets: int
    has_video: bool
    has_audio: bool


def _first_video_keyframes(path: MediaPath) -> list[float]:
    """Keyframe times (seconds, relative to the file's first packet dts)."""
    times: list[float] = []
    with open_input(path) as c:
        base: float | None = None
        video = c.streams.video[0] if c.streams.video else None
        for p in c.demux():
            if p.dts is None or p.time_base is None:
                continue
            t_dts = float(p.dts * p.time_base)
            if base is None:
                base = t_dts
            if video is not None and p.stream is video and p.is_keyframe and p.pts is not None:
                times.append(float(p.pts * p.time_base) - base)
    return times


def copy_packets(
    sources: Sequence[Source],
    output: OutputContainer,
    *,
    window: tuple[float, float] | None = None,
) -> CopyStats:
    """Remux ``sources`` into ``output`` (opened for writing, header not yet written).

    Output streams are made from the first source that has each track kind.
    Returns what was written. The caller closes ``output``.
    """
    out_streams: dict[str, Any] = {}
    templates: dict[str, bytes] = {}
    last_dts: dict[str, float] = {}
    end_s = 0.0
    counts = {"video": 0, "audio": 0}
    cut_start = 0.0
    cut_end = float("inf")
    if window is not None:
        start_s, stop_s = window
        cut_end = stop_s
        first = sources[0]
        keys = [first.offset_s + k for k in _first_video_keyframes(first.path)]
        before = [k for k in keys if k <= start_s + 1e-6]
        cut_start = max(before) if before else (keys[0] if keys else start_s)
    header_written = False

    for src in sources:
        container = open_input(src.path)
        try:
            in_streams = {}
            for kind in ("video", "audio"):
                streams = [s for s in container.streams if s.type == kind]
                if streams:
                    in_streams[kind] = streams[0]
                    if kind not in out_streams:
                        if header_written:
                            continue  # cannot add a track once the header is out
                        out_streams[kind] = output.add_stream_from_template(streams[0])
                        templates[kind] = bytes(streams[0].codec_context.extradata or b"")
            # A later generation with other H.264 parameters (a reconnect at another
            # resolution): carry its SPS/PPS in-band on every keyframe.
            inband = b""
            v = in_streams.get("video")
            if v is not None and v.codec_context.name == "h264" and "video" in templates:
                extradata = bytes(v.codec_context.extradata or b"")
                if extradata and extradata != templates["video"]:
                    inband = avcc_parameter_sets(extradata)
            # Per input stream: (kind, out stream, seconds per tick, tick shift or None).
            info: dict[int, list[Any]] = {}
            for kind, stream in in_streams.items():
                if kind in out_streams and stream.time_base is not None:
                    info[stream.index] = [kind, out_streams[kind], float(stream.time_base), None]
            base_s: float | None = None
            shift_s = 0.0
            video_started = window is None
            windowed = window is not None
            for packet in container.demux(list(in_streams.values())):
                dts = packet.dts
                pts = packet.pts
                if dts is None:
                    if pts is None:
                        continue
                    dts = pts
                elif pts is None:
                    pts = dts
                entry = info.get(packet.stream.index)
                if entry is None:
                    continue
                kind, out_stream, tick, shift = entry
                if base_s is None:
                    base_s = dts * tick
                    # asset time = offset + (t - base); output time = asset time - cut
                    shift_s = src.offset_s - base_s - cut_start
                if shift is None:
                    shift = entry[3] = round(shift_s / tick)
                if windowed:
                    t_pts = (pts + shift) * tick
                    if kind == "video":
                        if not video_started:
                            if not packet.is_keyframe or t_pts < -1e-3:
                                continue
                            video_started = True
                        if (dts + shift) * tick >= cut_end - cut_start - 1e-6:
                            continue
                    elif t_pts < -1e-3 or t_pts >= cut_end - cut_start - 1e-6:
                        continue
                new_dts = dts + shift
                new_pts = pts + shift
                # Keep dts strictly increasing per output track.
                t_dts = new_dts * tick
                prev = last_dts.get(kind)
                if prev is not None and t_dts <= prev:
                    bump = round((prev - t_dts) / tick) + 1
                    new_dts += bump
                    new_pts += bump
                    t_dts = new_dts * tick
                last_dts[kind] = t_dts
                packet.dts = new_dts
                packet.pts = new_pts if new_pts >= new_dts else new_dts
                end = (packet.pts + (packet.duration or 0)) * tick
                if end > end_s:
                    end_s = end
                if inband and kind == "video" and packet.is_keyframe:
                    packet = _with_prefix(packet, inband)
                packet.stream = out_stream
                counts[kind] += 1
                header_written = True
                output.mux(packet)
        finally:
            container.close()
    return CopyStats(
        duration_s=end_s,
        video_packets=counts["video"],
        audio_packets=counts["audio"],
        has_video="video" in out_streams,
        has_audio="audio" in out_streams,
    )


def avcc_parameter_sets(avcc: bytes) -> bytes:
    """SPS and PPS NAL units of an avcC record, each with a 4-byte length prefix."""
    if len(avcc) < 7 or avcc[0] != 1:
        return b""
    out = bytearray()
    pos = 5
    count = avcc[pos] & 0x1F
    pos += 1
    for _ in range(count):
        n = int.from_bytes(avcc[pos : pos + 2], "big")
        out += n.to_bytes(4, "big") + avcc[pos + 2 : pos + 2 + n]
        pos += 2 + n
    if pos < len(avcc):
        count = avcc[pos]
        pos += 1
        for _ in range(count):
            n = int.from_bytes(avcc[pos : pos + 2], "big")
            out += n.to_bytes(4, "big") + avcc[pos + 2 : pos + 2 + n]
            pos += 2 + n
    return bytes(out)


def _with_prefix(packet: av.Packet, prefix: bytes) -> av.Packet:
    new = av.Packet(prefix + bytes(packet))
    new.pts, new.dts, new.duration = packet.pts, packet.dts, packet.duration
    new.time_base = packet.time_base
    new.is_keyframe = True
    return new


# -- CMAF HLS packaging --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PackagedSegment:
    path: str
    duration: float


@dataclass(frozen=True, slots=True)
class Packaged:
    """An asset packaged as CMAF HLS in a local directory."""

    init_path: str
    segments: tuple[PackagedSegment, ...]
    codecs: str
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return sum(s.duration for s in self.segments)

    def to_dict(self) -> dict[str, Any]:
        return {
            "init_path": self.init_path,
            "segments": [[s.path, s.duration] for s in self.segments],
            "codecs": self.codecs,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Packaged:
        return cls(
            d["init_path"],
            tuple(PackagedSegment(p, float(t)) for p, t in d["segments"]),
            d["codecs"],
            int(d["width"]),
            int(d["height"]),
        )


def open_hls_output(out_dir: str | Path, segment_s: float = HLS_SEGMENT_S) -> OutputContainer:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return av.open(
        str(out / "index.m3u8"),
        "w",
        format="hls",
        options={
            "hls_time": f"{segment_s:g}",
            "hls_segment_type": "fmp4",
            "hls_playlist_type": "vod",
            "hls_fmp4_init_filename": "init.mp4",
            "hls_segment_filename": str(out / "seg%05d.m4s"),
            "hls_flags": "independent_segments",
        },
    )


def read_packaged(out_dir: str | Path) -> Packaged:
    """Collect what ``open_hls_output`` produced (after the container is closed)."""
    out = Path(out_dir)
    segments: list[PackagedSegment] = []
    duration = 0.0
    for line in (out / "index.m3u8").read_text().splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(re.split(r"[,\s]", line[8:])[0])
        elif line and not line.startswith("#"):
            segments.append(PackagedSegment(str(out / Path(line).name), duration))
    init = out / "init.mp4"
    width = height = 0
    with av.open(str(init)) as c:
        if c.streams.video:
            width = c.streams.video[0].codec_context.width
            height = c.streams.video[0].codec_context.height
    return Packaged(str(init), tuple(segments), init_codecs(init), width, height)


def package_cmaf(
    sources: Sequence[Source],
    out_dir: str | Path,
    *,
    window: tuple[float, float] | None = None,
    segment_s: float = HLS_SEGMENT_S,
) -> dict[str, Any]:
    """Remux sources (H.264/AAC) into CMAF HLS in ``out_dir``. Returns ``Packaged.to_dict()``."""
    output = open_hls_output(out_dir, segment_s)
    try:
        stats = copy_packets(sources, output, window=window)
    finally:
        output.close()
    if not (stats.video_packets or stats.audio_packets):
        raise ValueError("nothing to package (empty window?)")
    return read_packaged(out_dir).to_dict()
