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

from control.analytics.view import COLLECTION
from control.store.base import Store

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
LONGEST_VIEW_S = 24 * 3600.0
"""Views stored this long before a range began are not read for it (a view
lasting longer than a day counts only from its last day)."""


async def views_in(
    store: Store, where: tuple[str, str], start: float, end: float
) -> list[dict[str, Any]]:
    """The summaries of the views (tagged `where`) that may overlap [start, end):
    pages newest first, stopping at views stored a day before `start`, so a
    range costs what it holds, not the stream's whole history."""
    out: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page = await store.list(COLLECTION, limit=100, starting_after=after, where=where)
        for rec in page.data:
            data = rec.data
            until = data.get("ended_at") or data.get("last_seen") or data["started_at"]
            if data["started_at"] < end and until >= start:
                out.append(data)
        if not page.has_more or not page.data:
            return out
        if page.data[-1].created_at < start - LONGEST_VIEW_S:
            return out
        after = page.data[-1].id


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
