"""Demuxed MPEG-TS packets → the hub's `TrackInfo` and `MediaUnit`.

Owns the translation from what an MPEG-TS demuxer hands out (H.264 access
units in Annex B form, AAC frames with ADTS headers, 90 kHz timestamps that
wrap at 2^33) to hub media (AVCC, raw AAC, a clock starting near zero):

* H.264: parameter sets are in band; the first SPS + PPS make the video
  track's AVCDecoderConfigurationRecord, and different ones later mean a new
  track (`config_changed`, the driver starts a new generation). Access unit
  delimiters and parameter sets are taken out of the samples (CMAF's `avc1`
  keeps them in the sample entry). Nothing is written before the first
  keyframe with its parameter sets.
* AAC: each ADTS header gives the AudioSpecificConfig; frames are stamped as
  an exact count of frame lengths in 1/sample_rate, re-anchored to the TS
  clock when they drift by more than a frame (as the FLV path does).
* Timestamps: one base for every track (the first timestamp seen, less one
  second of headroom for a track that starts a little earlier), 33-bit wraps
  unwrapped.

Pure: bytes and integers in, hub objects out; no PyAV, no sockets.
"""

from __future__ import annotations

import time

from ingest import aac, h264
from ingest.hub import MediaUnit, TrackInfo, TrackKind
from ingest.media_error import MediaError
from ingest.webrtc.h264 import (
    NAL_AUD,
    NAL_PPS,
    NAL_SPS,
    build_avcc_config,
    nal_type,
    split_annexb,
    to_avcc,
)

TS_CLOCK = 90000
_WRAP = 1 << 33
_HEADROOM = TS_CLOCK
_NOT_SAMPLES = frozenset({NAL_AUD, NAL_SPS, NAL_PPS})


class TsMediaError(MediaError):
    """A packet that cannot become hub media (the stream is refused)."""


class TsMedia:
    """One SRT publisher's media, packet by packet."""

    def __init__(self, *, video: bool, audio: bool) -> None:
        self.expect_video = video
        self.expect_audio = audio
        self.video_track: TrackInfo | None = None
        self.audio_track: TrackInfo | None = None
        self.config_changed = False
        """Set when a track's configuration changed since `tracks` was last read."""
        self.dropped = 0
        """Units dropped before their track was known (video before a keyframe)."""
        self._base: int | None = None
        self._last_raw: dict[TrackKind, int] = {}
        self._wraps: dict[TrackKind, int] = {}
        self._last_video_dts = -1
        self._next_audio: int | None = None
        self._last_audio_dts = -1

    @property
    def tracks(self) -> tuple[TrackInfo, ...] | None:
        """The tracks, once every expected one is known; reading clears
        `config_changed`."""
        if (self.expect_video and self.video_track is None) or (
            self.expect_audio and self.audio_track is None
        ):
            return None
        self.config_changed = False
        return tuple(t for t in (self.video_track, self.audio_track) if t is not None)

    def _clock(self, kind: TrackKind, ts: int) -> int:
        """`ts` (90 kHz, 33-bit) as ticks since the stream's base."""
        last = self._last_raw.get(kind)
        wraps = self._wraps.get(kind, 0)
        if last is not None and last - ts > _WRAP // 2:
            wraps += 1
            self._wraps[kind] = wraps
        self._last_raw[kind] = ts
        ts += wraps * _WRAP
        if self._base is None:
            self._base = ts - _HEADROOM
        return ts - self._base

    # -- video ------------------------------------------------------------------
    def video(self, dts: int, pts: int, data: bytes, keyframe: bool) -> MediaUnit | None:
        """One H.264 access unit (Annex B, 90 kHz); a unit, or None while the
        track is not known yet."""
        nals = split_annexb(data)
        if not nals:
            return None
        sps = pps = None
        samples = []
        for nal in nals:
            t = nal_type(nal)
            if t == NAL_SPS:
                sps = nal
            elif t == NAL_PPS:
                pps = pps or nal
            if t not in _NOT_SAMPLES:
                samples.append(nal)
        if sps is not None and pps is not None:
            self._video_config(sps, pps)
        track = self.video_track
        at = self._clock(TrackKind.VIDEO, dts)
        cts = pts - dts
        if track is None or not samples:
            self.dropped += track is None
            return None
        if at <= self._last_video_dts:
            at = self._last_video_dts + 1
        self._last_video_dts = at
        return MediaUnit(TrackKind.VIDEO, at, at + cts, to_avcc(samples), keyframe, time.time())

    def _video_config(self, sps: bytes, pps: bytes) -> None:
        try:
            record = build_avcc_config(sps, pps)
            info = h264.parse_sps(sps)
        except MediaError as exc:
            raise TsMediaError(f"H.264 parameter sets: {exc}") from exc
        current = self.video_track
        if current is not None and current.config == record:
            return
        self.config_changed = current is not None
        self.video_track = TrackInfo(
            TrackKind.VIDEO, "h264", TS_CLOCK, record, width=info.width, height=info.height
        )

    # -- audio ------------------------------------------------------------------
    def audio(self, pts: int, data: bytes) -> list[MediaUnit]:
        """One or more ADTS frames stamped `pts` (90 kHz) → raw AAC units."""
        units: list[MediaUnit] = []
        at = self._clock(TrackKind.AUDIO, pts)
        pos = 0
        while pos < len(data):
            try:
                frame = aac.parse_adts(data[pos:])
            except aac.AacError as exc:
                raise TsMediaError(str(exc)) from exc
            pos += frame.size
            units.append(self._audio_unit(frame, at))
            at += 1024 * TS_CLOCK // frame.sample_rate
        return units

    def _audio_unit(self, frame: aac.AdtsFrame, at90: int) -> MediaUnit:
        track = self.audio_track
        if track is None or track.config != frame.config:
            self.config_changed = track is not None
            track = self.audio_track = TrackInfo(
                TrackKind.AUDIO,
                "aac",
                frame.sample_rate,
                frame.config,
                sample_rate=frame.sample_rate,
                channels=frame.channels,
            )
            self._next_audio = None
            self._last_audio_dts = -1
        rate = frame.sample_rate
        length = aac.parse_audio_specific_config(frame.config).frame_length
        anchor = at90 * rate // TS_CLOCK
        dts = self._next_audio
        if dts is None or abs(dts - anchor) > length:
            dts = max(anchor, self._last_audio_dts + 1)
        self._last_audio_dts = dts
        self._next_audio = dts + length
        return MediaUnit(TrackKind.AUDIO, dts, dts, frame.payload, True, time.time())
