"""Metrics per minute from view summaries and ingest minutes."""

from __future__ import annotations

from typing import Any

import pytest

from control.analytics.series import buckets, ingest_series, view_series

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60


def view(start: float, end: float | None, **kw: Any) -> dict[str, Any]:
    return {
        "started_at": T0 + start,
        "ended_at": None if end is None else T0 + end,
        "last_seen": T0 + (end if end is not None else 170),
        **kw,
    }


VIEWS = [
    view(10, 100, first_frame_at=T0 + 11, startup_time_ms=1000, stalls=[[T0 + 50, T0 + 53]]),
    view(20, 40, first_frame_at=T0 + 23, startup_time_ms=3000, latency_s=2.0),
    view(70, None, first_frame_at=T0 + 72, startup_time_ms=2000, latency_s=4.0),
    view(130, 140, fatal_error="manifestLoadError"),
]


def values(metric: str) -> list[Any]:
    return [p["value"] for p in view_series(metric, VIEWS, T0, T0 + 180, 60)]


def test_buckets_start_on_the_interval() -> None:
    assert buckets(T0 + 30, T0 + 150, 60) == [T0, T0 + 60, T0 + 120]


def test_viewers_are_the_views_watching_in_each_minute() -> None:
    assert values("viewers") == [2, 2, 2]


def test_startup_is_the_median_of_first_frames_in_the_minute() -> None:
    assert values("startup_time") == [2000.0, 2000.0, None]


def test_rebuffering_is_stalled_over_watched_time_within_the_minute() -> None:
    # minute 0: view 1 watched 50 s, stalled 3 s; view 2 watched 20 s
    assert values("rebuffer_percentage")[0] == pytest.approx(100 * 3 / 70, abs=0.01)
    assert values("rebuffer_percentage")[1] == 0.0


def test_failures_are_over_the_views_that_started_in_the_minute() -> None:
    assert values("playback_failure_percentage") == [0.0, 0.0, 100.0]


def test_latency_is_the_mean_of_views_that_report_it() -> None:
    assert values("latency") == [2.0, 4.0, 4.0]


def test_ingest_bitrate_averages_the_samples_of_each_bucket() -> None:
    minutes = {T0: (3000.0, 2), T0 + 60: (6000.0, 3)}
    assert [p["value"] for p in ingest_series(minutes, T0, T0 + 180, 60)] == [1500.0, 2000.0, None]
    (hour,) = ingest_series(minutes, T0 - T0 % 3600, T0 - T0 % 3600 + 3600, 3600)
    assert hour["value"] == 1800.0 and hour["count"] == 5
