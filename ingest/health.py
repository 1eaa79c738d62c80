"""Ingest health: what one publication actually sends, measured from its units.

Owns `IngestHealth`, which every `Publication` feeds with each unit it writes
(`observe`, a few attribute updates: it runs per frame on the event loop), and
which answers, when asked (`snapshot`, every few seconds), with the bitrate
and frame rate of the last `WINDOW_S` seconds, the keyframe interval (in media
time), whether the video has B-frames (presentation order differs from decode
order), the codecs and whether audio is present, and the warnings a viewer
would feel (`warnings`), each saying what to change:

* ``keyframe_interval``: more than `MAX_KEYFRAME_INTERVAL_S` between keyframes
  (OBS's default "auto" gives x264's 250 frames, 8.3 s at 30 fps): LL-HLS
  segments grow to that length and a new viewer joins that far behind;
* ``b_frames``: WebRTC viewers' browsers play no B-frames smoothly;
* ``no_audio``: a stream without an audio track;
* ``clock_drift``: the video's timestamps advance more than 10 % faster or
  slower than real time over the last `RATE_WINDOW_S` (a file pushed without
  ``-re``, or an encoder that cannot keep up and sends frames late): players
  run dry or fall behind;
* ``timestamp_jumps``: the video's timestamps jumped (more than
  `MAX_DTS_STEP_S`, forward or back) in the last `RATE_WINDOW_S`: players stall
  or skip there;
* ``bitrate_spike``: a 5 s bitrate more than `SPIKE_RATIO` times the median of
  the last minute: viewers on slower links rebuffer.

Rates and spikes are judged at each `snapshot` (every heartbeat), over the
marks kept since.

Pure and clock-free: callers pass the wall clock in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ingest.media import MediaUnit, TrackInfo, TrackKind

WINDOW_S = 5.0
"""Bitrate and frame rate are measured over about this much of the latest input."""
MAX_KEYFRAME_INTERVAL_S = 4.0
"""A keyframe interval above this gets the ``keyframe_interval`` warning."""
RATE_WINDOW_S = 30.0
"""Media time over real time, and timestamp jumps, are judged over this long."""
MAX_RATE_ERROR = 0.10
MAX_DTS_STEP_S = 1.0
"""Consecutive video frames further apart than this (forward or back) are a jump."""
SPIKE_RATIO = 2.5
SPIKE_MIN_KBPS = 500.0
"""Spikes below this bitrate hurt nobody."""
_SPIKE_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class IngestWarning:
    type: str
    message: str


class IngestHealth:
    """One publication's input, measured as it arrives."""

    __slots__ = (
        "_audio",
        "_b_frames",
        "_bitrates",
        "_bytes",
        "_dts_marks",
        "_frames",
        "_jumped",
        "_jumps",
        "_key_interval_s",
        "_last_dts",
        "_last_key_dts",
        "_marks",
        "_max_key_interval_s",
        "_max_pts",
        "_video_scale",
        "tracks",
    )

    def __init__(self, tracks: tuple[TrackInfo, ...], now: float) -> None:
        self.tracks = tracks
        video = self._track(TrackKind.VIDEO)
        self._video_scale = video.timescale if video is not None else 0
        self._audio = self._track(TrackKind.AUDIO) is not None
        self._bytes = 0
        self._frames = 0
        self._last_key_dts: int | None = None
        self._key_interval_s: float | None = None
        self._max_key_interval_s = 0.0
        self._max_pts: int | None = None
        self._b_frames = False
        self._marks: deque[tuple[float, int, int]] = deque([(now, 0, 0)], maxlen=64)
        """(wall clock, bytes, video frames) at each snapshot: the window's start."""
        self._last_dts: int | None = None
        self._jumps = 0
        self._jumped = 0
        self._dts_marks: deque[tuple[float, int, int]] = deque(maxlen=64)
        """(wall clock, latest video DTS less the jumps, jumps so far) at each snapshot."""
        self._bitrates: deque[float] = deque(maxlen=_SPIKE_SAMPLES)
        """The 5 s bitrates of the last snapshots (about a minute)."""

    def observe(self, unit: MediaUnit) -> None:
        self._bytes += len(unit.data)
        if unit.kind is not TrackKind.VIDEO:
            return
        self._frames += 1
        last_dts = self._last_dts
        if last_dts is not None and self._video_scale:
            step = unit.dts - last_dts
            if abs(step) > MAX_DTS_STEP_S * self._video_scale:
                self._jumps += 1
                self._jumped += step  # a jump is not drift: the rate leaves it out
                self._last_key_dts = None  # nor a keyframe interval
        self._last_dts = unit.dts
        if unit.keyframe:
            last = self._last_key_dts
            if last is not None and unit.dts > last and self._video_scale:
                interval = (unit.dts - last) / self._video_scale
                self._key_interval_s = interval
                if interval > self._max_key_interval_s:
                    self._max_key_interval_s = interval
            self._last_key_dts = unit.dts
        top = self._max_pts
        if top is not None and unit.pts < top:
            self._b_frames = True  # shown before a frame decoded earlier: reordered
        elif top is None or unit.pts > top:
            self._max_pts = unit.pts

    def snapshot(self, now: float) -> dict[str, Any]:
        """The figures of the API's ``health.ingest`` (less protocol and node)."""
        marks = self._marks
        while len(marks) > 1 and now - marks[1][0] >= WINDOW_S:
            marks.popleft()
        since, bytes_then, frames_then = marks[0]
        marks.append((now, self._bytes, self._frames))
        span = now - since
        video = self._track(TrackKind.VIDEO)
        audio = self._track(TrackKind.AUDIO)
        bitrate = round((self._bytes - bytes_then) * 8 / span / 1000, 1) if span > 0 else None
        if bitrate is not None and span >= WINDOW_S * 0.8:
            self._bitrates.append(bitrate)
        if self._last_dts is not None:
            self._dts_marks.append((now, self._last_dts - self._jumped, self._jumps))
        return {
            "bitrate_kbps": bitrate,
            "frame_rate": round((self._frames - frames_then) / span, 2)
            if span > 0 and video is not None
            else None,
            "keyframe_interval_s": None
            if self._key_interval_s is None
            else round(self._key_interval_s, 3),
            "video_codec": video.codec if video is not None else None,
            "audio_codec": audio.codec if audio is not None else None,
            "width": video.width if video is not None else None,
            "height": video.height if video is not None else None,
            "b_frames": self._b_frames,
            "media_rate": self.media_rate(),
            "timestamp_jumps": self._jumps,
        }

    def _rate_window(self) -> tuple[tuple[float, int, int], tuple[float, int, int]] | None:
        """The oldest snapshot mark at least RATE_WINDOW_S old (and no older than
        needed), and the newest."""
        marks = self._dts_marks
        if len(marks) < 2:
            return None
        newest = marks[-1]
        start = None
        for mark in marks:
            if newest[0] - mark[0] >= RATE_WINDOW_S:
                start = mark
            else:
                break
        return (start, newest) if start is not None else None

    def _recent_jumps(self) -> int:
        """Timestamp jumps since the newest snapshot mark RATE_WINDOW_S old (all of
        them while there is none that old)."""
        marks = self._dts_marks
        if not marks:
            return self._jumps
        newest = marks[-1][0]
        before = 0
        for t, _dts, jumps in marks:
            if newest - t >= RATE_WINDOW_S:
                before = jumps
            else:
                break
        return self._jumps - before

    def media_rate(self) -> float | None:
        """Seconds of video timestamps per second of real time over the last
        RATE_WINDOW_S (1.0: real time); None until that much was seen."""
        window = self._rate_window()
        if window is None or not self._video_scale:
            return None
        (t0, dts0, _), (t1, dts1, _) = window
        return round((dts1 - dts0) / self._video_scale / (t1 - t0), 3)

    def _spike(self) -> tuple[float, float] | None:
        rates = sorted(self._bitrates)
        if len(rates) < _SPIKE_SAMPLES // 2:
            return None
        median = rates[len(rates) // 2]
        top = rates[-1]
        if top >= SPIKE_MIN_KBPS and median > 0 and top > SPIKE_RATIO * median:
            return top, median
        return None

    def _track(self, kind: TrackKind) -> TrackInfo | None:
        return next((t for t in self.tracks if t.kind is kind), None)

    def warnings(self) -> list[IngestWarning]:
        """What the publisher should change, as measured so far."""
        out: list[IngestWarning] = []
        interval = self._max_key_interval_s
        if interval > MAX_KEYFRAME_INTERVAL_S:
            out.append(
                IngestWarning(
                    "keyframe_interval",
                    f"Keyframes arrive every {interval:.1f} s: LL-HLS segments are that "
                    "long and new viewers join that far behind. Set the encoder's "
                    "keyframe interval to 2 s (OBS: Settings, Output, Output Mode "
                    "Advanced, Keyframe Interval 2; ffmpeg: -g at twice the frame rate).",
                )
            )
        if self._b_frames:
            out.append(
                IngestWarning(
                    "b_frames",
                    "The video has B-frames, which WebRTC viewers cannot play smoothly. "
                    "Turn them off (OBS x264: Profile baseline or x264 options bframes=0; "
                    "ffmpeg: -bf 0 or -tune zerolatency).",
                )
            )
        rate = self.media_rate()
        if rate is not None and abs(rate - 1.0) > MAX_RATE_ERROR:
            fast = rate > 1.0
            out.append(
                IngestWarning(
                    "clock_drift",
                    f"The video's timestamps advance {rate:.2f} s per second of real time: "
                    + (
                        "the publisher sends faster than real time, and players fall "
                        "behind or skip. When streaming a file, pace it (ffmpeg: -re "
                        "before -i)."
                        if fast
                        else "frames arrive late, and players run dry. The encoder or "
                        "the uplink cannot keep up: lower the resolution, frame rate, "
                        "bitrate or the x264 preset."
                    ),
                )
            )
        jumps = self._recent_jumps()
        if jumps:
            out.append(
                IngestWarning(
                    "timestamp_jumps",
                    f"The video's timestamps jumped {jumps} time(s) in the last "
                    f"{RATE_WINDOW_S:.0f} s (by more than {MAX_DTS_STEP_S:.0f} s, forward "
                    "or back): players stall or skip there. Check the encoder's clock and that "
                    "no filter or source restarts its timestamps.",
                )
            )
        spike = self._spike()
        if spike is not None:
            out.append(
                IngestWarning(
                    "bitrate_spike",
                    f"The bitrate peaked at {spike[0]:.0f} kbit/s, {spike[0] / spike[1]:.1f} "
                    f"times its usual {spike[1]:.0f} kbit/s: viewers on slower links "
                    "rebuffer. Use constant bitrate (OBS: Rate Control CBR; x264: "
                    "-maxrate and -bufsize at the target bitrate).",
                )
            )
        if not self._audio:
            out.append(
                IngestWarning(
                    "no_audio",
                    "The stream has no audio track. Add one (even silence): some players "
                    "and most platforms expect it.",
                )
            )
        return out
