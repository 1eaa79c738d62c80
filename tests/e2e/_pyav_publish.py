"""Publishing HEVC or AV1 over Enhanced RTMP with PyAV's bundled FFmpeg 8
(libx265, libsvtav1): Debian's ffmpeg 5.1 cannot. Run as a process of its own
(`python -m tests.e2e._pyav_publish URL CODEC SECONDS`) so the encoder's CPU
and the GIL stay out of the test's event loop; frames are paced in real time."""

from __future__ import annotations

import sys
import time
from fractions import Fraction

import av
import numpy as np

ENCODERS = {
    "hevc": (
        "libx265",
        {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x265-params": "keyint=30:min-keyint=30:bframes=0:log-level=error",
        },
    ),
    "av1": ("libsvtav1", {"preset": "12", "svtav1-params": "keyint=30:pred-struct=1:rc=2"}),
}


def publish(url: str, codec: str, seconds: float, size: tuple[int, int] = (320, 180)) -> None:
    name, options = ENCODERS[codec]
    out = av.open(url, "w", format="flv")
    video = out.add_stream(name, rate=30, options=options)
    video.width, video.height = size
    video.pix_fmt = "yuv420p"
    video.bit_rate = 400_000
    video.codec_context.gop_size = 30
    audio = out.add_stream("aac", rate=48000)
    audio.bit_rate = 64_000
    w, h = size
    frames = int(seconds * 30)
    start = time.monotonic()
    samples = 0
    for i in range(frames):
        img = np.zeros((h, w, 3), dtype=np.uint8)
        img[:, :, 0] = (np.arange(w) + i * 4) % 256  # a moving ramp
        img[: h // 2, : w // 2, 1] = 200
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        frame.time_base = Fraction(1, 30)
        for packet in video.encode(frame):
            out.mux(packet)
        while samples < (i + 1) * 1600:  # 48 kHz / 30 fps
            t = (np.arange(1024) + samples) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).reshape(1, -1)
            af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            af.sample_rate = 48000
            af.pts = samples
            af.time_base = Fraction(1, 48000)
            samples += 1024
            for packet in audio.encode(af):
                out.mux(packet)
        delay = start + (i + 1) / 30 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for stream in (video, audio):
        for packet in stream.encode(None):
            out.mux(packet)
    out.close()


if __name__ == "__main__":
    publish(sys.argv[1], sys.argv[2], float(sys.argv[3]))
