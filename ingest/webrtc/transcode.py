"""The few PyAV transcodes WebRTC needs, as plain synchronous objects.

Each object is used from one worker thread at a time (callers run them in a
single-thread executor, off the event loop):

* `AacEncoder`: decoded audio frames (aiortc's Opus decoder output) -> raw AAC-LC
  frames, 48 kHz stereo, 1024 samples each, gaps filled with silence.
* `H264Encoder`: decoded video frames (the VP8-only WHIP case) -> H.264 access
  units (Annex B), libx264 veryfast/zerolatency, no B-frames.
* `AacToOpus`: raw AAC frames from the hub -> Opus packets (20 ms, 48 kHz) for
  WebRTC viewers, once per stream.
"""

from __future__ import annotations

import fractions

import av
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.video.frame import VideoFrame

SAMPLE_RATE = 48000
AAC_FRAME = 1024
OPUS_FRAME = 960
# AudioSpecificConfig: AAC-LC (2), 48 kHz (index 3), 2 channels.
AAC_LC_48K_STEREO_ASC = bytes([0x11, 0x90])


def audio_specific_config(sample_rate: int, channels: int) -> bytes:
    rates = [
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
    ]
    idx = rates.index(sample_rate)
    v = (2 << 11) | (idx << 7) | (channels << 3)
    return v.to_bytes(2, "big")


def _silence(samples: int) -> AudioFrame:
    frame = AudioFrame(format="s16", layout="stereo", samples=samples)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = SAMPLE_RATE
    return frame


class AacEncoder:
    """Audio frames (any rate/layout, with pts in 1/sample_rate) -> AAC frames."""

    MAX_GAP = SAMPLE_RATE * 2

    def __init__(self, bitrate: int = 128_000) -> None:
        self.ctx = av.CodecContext.create("aac", "w")
        self.ctx.sample_rate = SAMPLE_RATE
        self.ctx.layout = "stereo"
        self.ctx.format = "fltp"
        self.ctx.bit_rate = bitrate
        self.ctx.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.resampler = AudioResampler(
            format="fltp", layout="stereo", rate=SAMPLE_RATE, frame_size=AAC_FRAME
        )
        self._next_in_pts: int | None = None
        self._samples_out = 0

    @property
    def config(self) -> bytes:
        return AAC_LC_48K_STEREO_ASC

    def encode(self, frame: AudioFrame) -> list[bytes]:
        frames: list[AudioFrame] = []
        if frame.pts is not None and frame.sample_rate == SAMPLE_RATE:
            if self._next_in_pts is not None:
                gap = frame.pts - self._next_in_pts
                if AAC_FRAME // 2 < gap <= self.MAX_GAP:
                    frames.append(_silence(gap))
            self._next_in_pts = frame.pts + frame.samples
        frames.append(frame)
        out: list[bytes] = []
        for f in frames:
            f.pts = None
            for rf in self.resampler.resample(f):
                rf.pts = self._samples_out
                self._samples_out += rf.samples
                out.extend(bytes(p) for p in self.ctx.encode(rf))
        return out


class H264Encoder:
    """Video frames -> H.264 access units in Annex B (SPS/PPS in every keyframe)."""

    def __init__(self, fps: int = 30, gop_s: float = 2.0, bitrate: int = 2_500_000) -> None:
        self.fps = fps
        self.gop = max(1, int(fps * gop_s))
        self.bitrate = bitrate
        self.ctx: av.VideoCodecContext | None = None
        self._last_pts = -1

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width = width - width % 2
        ctx.height = height - height % 2
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = fractions.Fraction(1, 90000)
        ctx.framerate = fractions.Fraction(self.fps, 1)
        ctx.bit_rate = self.bitrate
        ctx.gop_size = self.gop
        ctx.max_b_frames = 0
        ctx.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "repeat-headers": "1",
            "x264-params": "bframes=0:repeat-headers=1:aud=0",
        }
        ctx.profile = "High"
        return ctx

    def encode(
        self, frame: VideoFrame, pts_90k: int, force_keyframe: bool
    ) -> list[tuple[int, bytes]]:
        """(pts in 90 kHz, Annex B access unit) for each packet out."""
        w, h = frame.width - frame.width % 2, frame.height - frame.height % 2
        if self.ctx is None or self.ctx.width != w or self.ctx.height != h:
            self.ctx = self._open(frame.width, frame.height)
            force_keyframe = True
        if pts_90k <= self._last_pts:
            pts_90k = self._last_pts + 1
        self._last_pts = pts_90k
        if frame.format.name != "yuv420p" or frame.width != w or frame.height != h:
            frame = frame.reformat(width=w, height=h, format="yuv420p")
        frame.pts = pts_90k
        frame.time_base = fractions.Fraction(1, 90000)
        frame.pict_type = (
            av.video.frame.PictureType.I if force_keyframe else av.video.frame.PictureType.NONE
        )
        out = []
        for packet in self.ctx.encode(frame):
            out.append((int(packet.pts if packet.pts is not None else pts_90k), bytes(packet)))
        return out


class AacToOpus:
    """Raw AAC frames (with their AudioSpecificConfig) -> Opus packets (bytes, 20 ms)."""

    def __init__(self, config: bytes, bitrate: int = 96_000) -> None:
        self.dec = av.CodecContext.create("aac", "r")
        if config:
            self.dec.extradata = config
        self.enc = av.CodecContext.create("libopus", "w")
        self.enc.sample_rate = SAMPLE_RATE
        self.enc.layout = "stereo"
        self.enc.format = "s16"
        self.enc.bit_rate = bitrate
        self.enc.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self.enc.options = {"application": "lowdelay"}
        self.resampler = AudioResampler(
            format="s16", layout="stereo", rate=SAMPLE_RATE, frame_size=OPUS_FRAME
        )
        self._samples = 0

    def transcode(self, aac_frame: bytes) -> list[bytes]:
        out: list[bytes] = []
        try:
            frames = self.dec.decode(av.Packet(aac_frame))
        except av.FFmpegError:
            return out
        for frame in frames:
            frame.pts = None
            for rf in self.resampler.resample(frame):
                rf.pts = self._samples
                self._samples += rf.samples
                out.extend(bytes(p) for p in self.enc.encode(rf))
        return out
