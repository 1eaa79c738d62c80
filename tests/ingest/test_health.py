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


def played(units: list[MediaUnit], speed: float, snapshot_s: float = 3.0) -> IngestHealth:
    """Units fed as a publisher sending `speed` seconds of media per second,
    with a snapshot (a heartbeat) every `snapshot_s` of real time."""
    h = IngestHealth(synthetic_tracks(), T0)
    next_snapshot = T0 + snapshot_s
    for u in units:
        now = T0 + (u.wallclock - T0) / speed
        while now >= next_snapshot:
            h.snapshot(next_snapshot)
            next_snapshot += snapshot_s
        h.observe(u)
    h.snapshot(next_snapshot)
    return h


def kinds(h: IngestHealth) -> set[str]:
    return {w.type for w in h.warnings()}


def test_real_time_input_has_no_drift_jump_or_spike() -> None:
    h = played(synthetic_units(60.0, gop_s=2.0, wallclock0=T0), 1.0)
    assert h.media_rate() == pytest.approx(1.0, abs=0.05)
    assert kinds(h) == set()


def test_a_file_pushed_faster_than_real_time_is_clock_drift() -> None:
    h = played(synthetic_units(90.0, gop_s=2.0, wallclock0=T0), 2.0)
    assert h.media_rate() == pytest.approx(2.0, rel=0.1)
    (drift,) = [w for w in h.warnings() if w.type == "clock_drift"]
    assert "-re" in drift.message
    slow = played(synthetic_units(40.0, gop_s=2.0, wallclock0=T0), 0.8)
    assert "clock_drift" in kinds(slow)
    assert (
        "lower the resolution"
        in next(w for w in slow.warnings() if w.type == "clock_drift").message
    )


def test_a_timestamp_jump_is_warned_while_it_is_recent() -> None:
    units = synthetic_units(60.0, gop_s=2.0, wallclock0=T0)
    jumped = [
        replace(u, dts=u.dts + 5000, pts=u.pts + 5000)
        if u.kind is TrackKind.VIDEO and u.wallclock >= T0 + 10
        else u
        for u in units
    ]
    early = played([u for u in jumped if u.wallclock < T0 + 20], 1.0)
    assert "timestamp_jumps" in kinds(early)
    mid = played([u for u in jumped if u.wallclock < T0 + 35], 1.0)
    assert kinds(mid) == {"timestamp_jumps"}  # a jump, not a drift
    h = played(jumped, 1.0)  # 50 s later: no longer recent
    assert h.snapshot(T0 + 61)["timestamp_jumps"] == 1
    assert kinds(h) == set()


def test_a_burst_far_above_the_usual_bitrate_is_a_spike() -> None:
    # 600 kbit/s of video, then 4 s at four times that
    units = [
        replace(u, data=b"v" * 2500) if u.kind is TrackKind.VIDEO else u
        for u in synthetic_units(70.0, gop_s=2.0, wallclock0=T0)
    ]
    burst = [
        replace(u, data=b"v" * 10_000)
        if u.kind is TrackKind.VIDEO and T0 + 60 <= u.wallclock < T0 + 64
        else u
        for u in units
    ]
    h = played(burst, 1.0)
    (spike,) = [w for w in h.warnings() if w.type == "bitrate_spike"]
    assert "CBR" in spike.message
    assert "bitrate_spike" not in kinds(played(units, 1.0))
