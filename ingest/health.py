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
* ``no_audio``: a stream without an audio track.

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


@dataclass(frozen=True, slots=True)
class IngestWarning:
    type: str
    message: str


class IngestHealth:
    """One publication's input, measured as it arrives."""

    __slots__ = (
        "_audio",
        "_b_frames",
        "_bytes",
        "_frames",
        "_key_interval_s",
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

    def observe(self, unit: MediaUnit) -> None:
        self._bytes += len(unit.data)
        if unit.kind is not TrackKind.VIDEO:
            return
        self._frames += 1
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
        return {
            "bitrate_kbps": round((self._bytes - bytes_then) * 8 / span / 1000, 1)
            if span > 0
            else None,
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
        }

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
        if not self._audio:
            out.append(
                IngestWarning(
                    "no_audio",
                    "The stream has no audio track. Add one (even silence): some players "
                    "and most platforms expect it.",
                )
            )
        return out
