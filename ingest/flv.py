"""FLV audio/video tag bodies → the hub's `TrackInfo` and `MediaUnit`.

Owns the translation from what RTMP carries (FLV tag bodies with millisecond
timestamps) to hub media:

* H.264 (codec id 7): the sequence header (AVCDecoderConfigurationRecord)
  becomes a video `TrackInfo` (width/height from the SPS, timescale 90000);
  NALU packets become `MediaUnit`s with dts = ms * 90, pts = dts + composition
  time, AVCC data as sent, keyframe from the frame type.
* AAC (sound format 10): the sequence header (AudioSpecificConfig) gives the
  real sample rate and channels (FLV's rate bits always say 44.1 kHz); raw
  frames are re-stamped as n * frame length in 1/sample_rate (1024 samples a
  frame, so that sample durations are exact), anchored to the FLV clock: the
  count jumps forward to the FLV timestamp after a gap of more than one frame;
  when the count runs more than one frame *ahead* of the FLV clock (frames
  stamped late) a frame is dropped instead, so durations stay exact and A/V
  sync stays within a frame; a jump back of over a second resyncs.
* Enhanced RTMP video (ExVideoTagHeader) with FourCC `hvc1` (HEVC: the
  SequenceStart's hvcC is the track config, CodedFrames carry a composition
  time, CodedFramesX none) or `av01` (AV1: av1C, OBUs): tracks "hevc" and
  "av1", picture size from onMetaData (AV1: from its sequence header).
* Other Enhanced RTMP codecs (vp09, multitrack, Opus...) and legacy codecs
  (Sorenson, VP6, MP3, Speex, Nellymoser, G.711...) are parsed far enough to
  name them, then refused with `UnsupportedMedia`.

Malformed input raises `ProtocolError` only. 32-bit RTMP timestamps are unwrapped.
"""

from __future__ import annotations

import struct
import time
from dataclasses import replace
from typing import Any

from ingest import aac, h264, hevc_av1
from ingest.hub import MediaUnit, TrackInfo, TrackKind
from ingest.media_error import MediaError
from ingest.rtmp.errors import ProtocolError, UnsupportedMedia

VIDEO_TIMESCALE = 90000

VIDEO_CODECS = {
    1: "JPEG",
    2: "Sorenson H.263",
    3: "Screen video",
    4: "On2 VP6",
    5: "On2 VP6 with alpha",
    6: "Screen video v2",
    7: "H.264",
    12: "HEVC (non-standard FLV codec id 12)",
    13: "AV1 (non-standard FLV codec id 13)",
}
AUDIO_CODECS = {
    0: "Linear PCM",
    1: "ADPCM",
    2: "MP3",
    3: "Linear PCM (little endian)",
    4: "Nellymoser 16 kHz",
    5: "Nellymoser 8 kHz",
    6: "Nellymoser",
    7: "G.711 A-law",
    8: "G.711 mu-law",
    10: "AAC",
    11: "Speex",
    13: "Opus (non-standard FLV id 13)",
    14: "MP3 8 kHz",
    15: "device-specific sound",
}
FOURCC_NAMES = {
    "hvc1": "HEVC",
    "av01": "AV1",
    "vp09": "VP9",
    "avc1": "H.264 (Enhanced RTMP)",
    "Opus": "Opus",
    "fLaC": "FLAC",
    "ac-3": "AC-3",
    "ec-3": "E-AC-3",
    ".mp3": "MP3",
    "mp4a": "AAC (Enhanced RTMP)",
}

EX_VIDEO_CODECS = {"hvc1": "hevc", "av01": "av1"}
"""Enhanced RTMP video FourCCs onair packages, and the hub's codec name."""
EX_SEQUENCE_START = 0
EX_CODED_FRAMES = 1
EX_SEQUENCE_END = 2
EX_CODED_FRAMES_X = 3
EX_METADATA = 4
EX_MPEG2TS_START = 5

_U32 = struct.Struct(">I")
_WRAP = 1 << 32
_HALF = 1 << 31


def _fourcc(payload: bytes | bytearray, at: int) -> str:
    if len(payload) < at + 4:
        raise ProtocolError("Enhanced RTMP tag too short for its FourCC")
    return bytes(payload[at : at + 4]).decode("latin-1")


class FlvDemuxer:
    """Per-publisher FLV tag state: track configs, timestamp unwrapping, AAC re-stamping."""

    def __init__(self, *, clock: Any = time.time) -> None:
        self.video_track: TrackInfo | None = None
        self.audio_track: TrackInfo | None = None
        self.config_changes = 0
        """Sequence headers that changed a track after it was first set up."""
        self.expect_video: bool | None = None
        self.expect_audio: bool | None = None
        """From onMetaData (None until metadata says)."""
        self.video_bitrate = 0
        self.audio_bitrate = 0
        self.meta_width = self.meta_height = 0
        """Picture size from onMetaData (HEVC's comes from there)."""
        self.dropped = 0
        """Frames before their sequence header."""
        self.audio_resyncs = 0
        """Times the AAC count jumped to the FLV clock (a gap, or a clock jump)."""
        self.audio_sync_drops = 0
        """AAC frames dropped because the count ran over a frame ahead of the FLV clock."""
        self._clock = clock
        self._last_raw = -1
        self._wrap = 0
        self._last_video_dts = -1
        self._last_audio_dts = -1
        self._next_audio: int | None = None
        self._audio_rate = 0
        self._audio_frame = 1024

    @property
    def tracks(self) -> tuple[TrackInfo, ...]:
        return tuple(t for t in (self.video_track, self.audio_track) if t is not None)

    def set_metadata(self, meta: dict[str, Any]) -> None:
        """onMetaData: declared bitrates and which tracks to expect."""
        if "videocodecid" in meta or "width" in meta:
            self.expect_video = True
        if "audiocodecid" in meta or "audiosamplerate" in meta:
            self.expect_audio = True
        if self.expect_video and self.expect_audio is None:
            self.expect_audio = False
        if self.expect_audio and self.expect_video is None:
            self.expect_video = False
        self.meta_width = _int(meta.get("width"))
        self.meta_height = _int(meta.get("height"))
        self.video_bitrate = _kbps(meta.get("videodatarate"))
        self.audio_bitrate = _kbps(meta.get("audiodatarate"))
        if self.video_track is not None and self.video_bitrate:
            self.video_track = replace(self.video_track, bitrate=self.video_bitrate)
        if self.audio_track is not None and self.audio_bitrate:
            self.audio_track = replace(self.audio_track, bitrate=self.audio_bitrate)

    @property
    def ready(self) -> bool:
        """Every track the metadata announced has its sequence header."""
        if self.expect_video is None and self.expect_audio is None:
            return False
        return (not self.expect_video or self.video_track is not None) and (
            not self.expect_audio or self.audio_track is not None
        )

    def _unwrap(self, ts: int) -> int:
        last = self._last_raw
        if ts < last and last - ts > _HALF:
            self._wrap += _WRAP
        self._last_raw = ts
        return ts + self._wrap

    # -- video ------------------------------------------------------------------

    def video(self, timestamp: int, payload: bytes | bytearray) -> MediaUnit | None:
        """One FLV video tag body; a MediaUnit, or None (config, info frames, nothing yet)."""
        n = len(payload)
        if n == 0:
            return None
        b0 = payload[0]
        if b0 & 0x80:
            return self._ex_video(timestamp, payload)
        frame_type = b0 >> 4
        codec = b0 & 0x0F
        if codec != 7:
            if frame_type == 5:
                return None
            raise UnsupportedMedia(
                f"video codec {VIDEO_CODECS.get(codec, f'id {codec}')} is not supported; "
                "publish H.264 video"
            )
        if frame_type == 5:
            return None  # video info / command frame
        if n < 5:
            raise ProtocolError(f"AVC video tag of {n} bytes")
        ptype = payload[1]
        if ptype == 1:
            track = self.video_track
            if track is None or n == 5:
                self.dropped += track is None
                return None
            cts = (payload[2] << 16) | (payload[3] << 8) | payload[4]
            if cts & 0x800000:
                cts -= 0x1000000
            dts = self._unwrap(timestamp) * 90
            if dts <= self._last_video_dts:
                dts = self._last_video_dts + 1
            self._last_video_dts = dts
            data = _tail(payload, 5)
            _check_avcc(data)
            return MediaUnit(
                TrackKind.VIDEO, dts, dts + cts * 90, data, frame_type == 1, self._clock()
            )
        if ptype == 0:
            self._video_config(bytes(payload[5:]))
            return None
        if ptype == 2:
            return None  # end of sequence
        raise ProtocolError(f"AVC packet type {ptype}")

    def _ex_video(self, timestamp: int, payload: bytes | bytearray) -> MediaUnit | None:
        """An Enhanced RTMP video tag (ExVideoTagHeader): HEVC and AV1."""
        frame_type = (payload[0] >> 4) & 0x07
        ptype = payload[0] & 0x0F
        fourcc = _fourcc(payload, 2 if ptype == 6 else 1)
        codec = EX_VIDEO_CODECS.get(fourcc)
        if codec is None or ptype > 5:
            name = FOURCC_NAMES.get(fourcc, "unknown")
            raise UnsupportedMedia(
                f"video codec {fourcc!r} ({name}, Enhanced RTMP"
                f"{', multitrack' if ptype == 6 else ''}) is not supported; "
                "publish H.264, HEVC or AV1 video"
            )
        if frame_type == 5 or ptype in (EX_SEQUENCE_END, EX_METADATA, EX_MPEG2TS_START):
            return None  # command frame, end of sequence, colour metadata
        if ptype == EX_SEQUENCE_START:
            self._ex_video_config(codec, bytes(payload[5:]))
            return None
        track = self.video_track
        if track is None or track.codec != codec:
            self.dropped += 1
            return None
        cts = 0
        start = 5
        if ptype == EX_CODED_FRAMES and codec == "hevc":
            if len(payload) < 8:
                raise ProtocolError(f"HEVC video tag of {len(payload)} bytes")
            cts = (payload[5] << 16) | (payload[6] << 8) | payload[7]
            if cts & 0x800000:
                cts -= 0x1000000
            start = 8
        if len(payload) <= start:
            return None
        dts = self._unwrap(timestamp) * 90
        if dts <= self._last_video_dts:
            dts = self._last_video_dts + 1
        self._last_video_dts = dts
        data = _tail(payload, start)
        if codec == "hevc":
            _check_avcc(data)  # 4-byte NAL lengths, as for H.264
        return MediaUnit(TrackKind.VIDEO, dts, dts + cts * 90, data, frame_type == 1, self._clock())

    def _ex_video_config(self, codec: str, record: bytes) -> None:
        width, height = self.meta_width, self.meta_height
        try:
            if codec == "hevc":
                if hevc_av1.parse_hvcc(record).nal_length_size != 4:
                    raise UnsupportedMedia("HEVC with NAL lengths of other than 4 bytes")
            else:
                av1 = hevc_av1.parse_av1c(record)
                width, height = av1.width or width, av1.height or height
        except MediaError as exc:
            raise ProtocolError(f"{codec} sequence header: {exc}") from exc
        if self.video_track is not None and self.video_track.config != record:
            self.config_changes += 1
        if self.video_track is None or self.video_track.config != record:
            self.video_track = TrackInfo(
                TrackKind.VIDEO,
                codec,
                VIDEO_TIMESCALE,
                record,
                width=width,
                height=height,
                bitrate=self.video_bitrate,
            )

    def _video_config(self, record: bytes) -> None:
        try:
            cfg = h264.parse_avcc(record)
            sps = h264.parse_sps(cfg.sps[0])
        except MediaError as exc:
            raise ProtocolError(f"H.264 sequence header: {exc}") from exc
        if cfg.nal_length_size != 4:
            raise UnsupportedMedia(f"H.264 with {cfg.nal_length_size}-byte NAL lengths")
        track = TrackInfo(
            TrackKind.VIDEO,
            "h264",
            VIDEO_TIMESCALE,
            record,
            width=sps.width,
            height=sps.height,
            bitrate=self.video_bitrate,
        )
        if self.video_track is not None and self.video_track.config != record:
            self.config_changes += 1
        if self.video_track is None or self.video_track.config != record:
            self.video_track = track

    # -- audio ------------------------------------------------------------------

    def audio(self, timestamp: int, payload: bytes | bytearray) -> MediaUnit | None:
        """One FLV audio tag body; a MediaUnit, or None (config, nothing yet)."""
        n = len(payload)
        if n == 0:
            return None
        fmt = payload[0] >> 4
        if fmt != 10:
            if fmt == 9:
                fourcc = _fourcc(payload, 1)
                name = FOURCC_NAMES.get(fourcc, "unknown")
                raise UnsupportedMedia(
                    f"audio codec {fourcc!r} ({name}, Enhanced RTMP) is not supported yet; "
                    "publish AAC audio"
                )
            raise UnsupportedMedia(
                f"audio codec {AUDIO_CODECS.get(fmt, f'id {fmt}')} is not supported; "
                "publish AAC audio"
            )
        if n < 2:
            raise ProtocolError("AAC audio tag of 1 byte")
        ptype = payload[1]
        if ptype == 1:
            if self.audio_track is None or n == 2:
                self.dropped += self.audio_track is None
                return None
            rate = self._audio_rate
            frame = self._audio_frame
            anchor = self._unwrap(timestamp) * rate // 1000
            dts = self._next_audio
            if dts is not None and frame < dts - anchor <= rate:
                # The count runs ahead of the publisher's clock (frames stamped late,
                # as GStreamer's flvmux does at start): drop one frame to stay in sync.
                self.audio_sync_drops += 1
                return None
            if dts is None or abs(dts - anchor) > frame:
                if dts is not None:
                    self.audio_resyncs += 1
                dts = anchor
                if dts <= self._last_audio_dts:
                    dts = self._last_audio_dts + 1
            self._last_audio_dts = dts
            self._next_audio = dts + frame
            data = _tail(payload, 2)
            return MediaUnit(TrackKind.AUDIO, dts, dts, data, True, self._clock())
        if ptype == 0:
            self._audio_config(bytes(payload[2:]))
            return None
        raise ProtocolError(f"AAC packet type {ptype}")

    def _audio_config(self, asc: bytes) -> None:
        try:
            cfg = aac.parse_audio_specific_config(asc)
        except MediaError as exc:
            raise ProtocolError(f"AAC sequence header: {exc}") from exc
        if self.audio_track is not None and self.audio_track.config == asc:
            return
        if self.audio_track is not None:
            self.config_changes += 1
        self.audio_track = TrackInfo(
            TrackKind.AUDIO,
            "aac",
            cfg.sample_rate,
            asc,
            sample_rate=cfg.sample_rate,
            channels=cfg.channels,
            bitrate=self.audio_bitrate,
        )
        if cfg.sample_rate != self._audio_rate:
            self._next_audio = None
            self._last_audio_dts = -1
        self._audio_rate = cfg.sample_rate
        self._audio_frame = cfg.frame_length


def _tail(payload: bytes | bytearray, start: int) -> bytes:
    """payload[start:] as bytes, copied once (slicing a bytearray would copy twice)."""
    if type(payload) is bytes:
        return payload[start:]
    with memoryview(payload) as mv:
        return bytes(mv[start:])


def _check_avcc(data: bytes) -> None:
    """The 4-byte NAL lengths must tile the access unit exactly (muxers rely on it)."""
    pos = 0
    end = len(data)
    unpack = _U32.unpack_from
    while pos + 4 <= end:
        pos += 4 + unpack(data, pos)[0]
    if pos != end:
        raise ProtocolError("H.264 access unit: NAL unit lengths do not match its size")


def _kbps(value: Any) -> int:
    if isinstance(value, float) and 0 < value < 1e7:
        return int(value * 1000)
    return 0


def _int(value: Any) -> int:
    """A positive onMetaData number (AMF0 numbers are floats) as an int, else 0."""
    if isinstance(value, float | int) and not isinstance(value, bool) and 0 < value < 1e5:
        return int(value)
    return 0
