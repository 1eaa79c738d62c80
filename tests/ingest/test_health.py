"""Ingest health (ingest/health.py): what a publication sends, measured from its
units — bitrate and frame rate over the last seconds, the keyframe interval in
media time, B-frames by reordering — and the warnings that say what to change."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ingest.health import MAX_KEYFRAME_INTERVAL_S, IngestHealth
from ingest.hub import MediaUnit, TrackKind
from tests.realtime.media import synthetic_tracks, synthetic_units

T0 = 1_700_000_000.0


def fed(units: list[MediaUnit], **tracks: bool) -> IngestHealth:
    h = IngestHealth(synthetic_tracks(**tracks), T0)
    for u in units:
        h.observe(u)
    return h


def test_bitrate_frame_rate_and_keyframe_interval_of_the_last_seconds() -> None:
    units = synthetic_units(12.0, gop_s=2.0, wallclock0=T0)
    h = IngestHealth(synthetic_tracks(), T0)
    for u in units:
        if u.wallclock < T0 + 6.0:
            h.observe(u)
    h.snapshot(T0 + 6.0)
    late = [u for u in units if u.wallclock >= T0 + 6.0]
    for u in late:
        h.observe(u)
    snap = h.snapshot(T0 + 12.0)
    sent = sum(len(u.data) for u in late) * 8 / 6.0 / 1000
    assert snap["bitrate_kbps"] == pytest.approx(sent, rel=0.02)
    assert snap["frame_rate"] == pytest.approx(30.0, rel=0.02)
    assert snap["keyframe_interval_s"] == pytest.approx(2.0, abs=0.04)
    assert (snap["video_codec"], snap["audio_codec"]) == ("h264", "aac")
    assert (snap["width"], snap["height"], snap["b_frames"]) == (640, 360, False)
    assert h.warnings() == []


def test_a_long_keyframe_interval_is_a_warning_that_says_what_to_set() -> None:
    h = fed(synthetic_units(20.0, gop_s=8.3, wallclock0=T0))
    assert h.snapshot(T0 + 20.0)["keyframe_interval_s"] == pytest.approx(8.3, abs=0.04)
    (w,) = h.warnings()
    assert w.type == "keyframe_interval" and "8.3 s" in w.message and "2 s" in w.message
    assert MAX_KEYFRAME_INTERVAL_S == 4.0
    assert not fed(synthetic_units(20.0, gop_s=4.0, wallclock0=T0)).warnings()


def test_reordered_presentation_times_are_b_frames() -> None:
    units = synthetic_units(3.0, wallclock0=T0)
    video = [u for u in units if u.kind is TrackKind.VIDEO]
    # decode order I P B B P B B ...: each B is shown before the P decoded ahead of it
    step = video[1].dts - video[0].dts
    reordered = []
    for i, u in enumerate(video):
        shift = 0 if i % 3 == 0 else (2 * step if i % 3 == 1 else -step)
        reordered.append(replace(u, pts=u.dts + 2 * step + shift))
    h = fed(reordered)
    assert h.snapshot(T0 + 3.0)["b_frames"] is True
    assert [w.type for w in h.warnings()] == ["b_frames"]
    # a constant composition offset is no reordering
    steady = fed([replace(u, pts=u.dts + 2 * step) for u in video])
    assert steady.snapshot(T0 + 3.0)["b_frames"] is False


def test_a_stream_without_audio_is_warned() -> None:
    h = fed(synthetic_units(3.0, audio=False, wallclock0=T0), audio=False)
    assert [w.type for w in h.warnings()] == ["no_audio"]
    assert h.snapshot(T0 + 3.0)["audio_codec"] is None


def test_the_hub_measures_every_publication() -> None:
    from ingest.hub import Hub

    hub = Hub()
    pub = hub.publish("s", synthetic_tracks(), source="rtmp")
    for u in synthetic_units(2.0, wallclock0=T0):
        pub.write(u)
    snap = pub.health.snapshot(pub.started_at + 2.0)
    assert snap["frame_rate"] is not None and snap["frame_rate"] > 0
