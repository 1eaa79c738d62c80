"""Viewer and ingest metrics over time: what ``GET /v1/metrics/{metric}/timeseries``
answers, in buckets of a minute or an hour, computed from the stored views
(`control.analytics.view` summaries) and the ingest minutes the publishing
node records (`control.ingest_health`). Sans-IO: the route reads, this counts.

Per bucket ``[t, t + step)``:

* ``viewers`` — views watching at some time in the bucket;
* ``startup_time`` — the median startup (ms) of views whose first frame
  came in the bucket;
* ``rebuffer_percentage`` — time stalled over time watched, of the views
  watching in the bucket, within the bucket;
* ``playback_failure_percentage`` — views that started in the bucket and
  ended in a fatal error, over views that started in it;
* ``latency`` — the mean latency to live (s) of views watching in the bucket
  that reported one;
* ``ingest_bitrate`` — the publisher's mean bitrate (kbps).

``count`` is how many views (or ingest samples) make the value; a bucket
without any has ``value`` null (``viewers``: 0).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

METRICS = (
    "viewers",
    "startup_time",
    "rebuffer_percentage",
    "playback_failure_percentage",
    "latency",
    "ingest_bitrate",
)
INTERVALS = {"minute": 60, "hour": 3600}
MAX_POINTS = 1440
"""A day of minutes, two months of hours."""


def buckets(start: float, end: float, step: int) -> list[float]:
    first = start - start % step
    out: list[float] = []
    t = first
    while t < end:
        out.append(t)
        t += step
    return out


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def view_series(
    metric: str, views: Iterable[Mapping[str, Any]], start: float, end: float, step: int
) -> list[dict[str, Any]]:
    """`metric` (not ``ingest_bitrate``) over the views, bucket by bucket."""
    ts = buckets(start, end, step)
    spans = []
    for v in views:
        began = float(v["started_at"])
        until = float(v["ended_at"] if v.get("ended_at") is not None else v["last_seen"])
        spans.append((began, max(began, until), v))
    out: list[dict[str, Any]] = []
    for t in ts:
        t1 = t + step
        watching = [(b, u, v) for b, u, v in spans if b < t1 and u >= t]
        value: float | None
        count: int
        if metric == "viewers":
            count = len(watching)
            value = count
        elif metric == "startup_time":
            startups = [
                v["startup_time_ms"]
                for _b, _u, v in spans
                if v.get("startup_time_ms") is not None
                and v.get("first_frame_at") is not None
                and t <= v["first_frame_at"] < t1
            ]
            count = len(startups)
            value = float(statistics.median(startups)) if startups else None
        elif metric == "rebuffer_percentage":
            watched = stalled = 0.0
            count = 0
            for b, u, v in watching:
                if v.get("first_frame_at") is None:
                    continue
                count += 1
                watched += _overlap(b, u, t, t1)
                stalled += sum(_overlap(s, e, t, t1) for s, e in v.get("stalls", []))
            value = round(100 * stalled / watched, 3) if watched > 0 else None
        elif metric == "playback_failure_percentage":
            started = [v for b, _u, v in spans if t <= b < t1]
            count = len(started)
            failed = sum(1 for v in started if v.get("fatal_error"))
            value = round(100 * failed / count, 3) if count else None
        elif metric == "latency":
            latencies = [v["latency_s"] for _b, _u, v in watching if v.get("latency_s") is not None]
            count = len(latencies)
            value = round(sum(latencies) / count, 3) if count else None
        else:
            raise ValueError(f"not a view metric: {metric}")
        out.append({"t": t, "value": value, "count": count})
    return out


def ingest_series(
    minutes: Mapping[float, tuple[float, int]], start: float, end: float, step: int
) -> list[dict[str, Any]]:
    """``ingest_bitrate`` from minute → (sum of kbps samples, samples)."""
    out: list[dict[str, Any]] = []
    for t in buckets(start, end, step):
        total, count = 0.0, 0
        for minute in range(int(t), int(t + step), 60):
            got = minutes.get(float(minute))
            if got is not None:
                total += got[0]
                count += got[1]
        out.append({"t": t, "value": round(total / count, 1) if count else None, "count": count})
    return out
