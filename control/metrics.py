"""A tiny Prometheus metrics registry (text exposition format 0.0.4).

Counters, gauges (set directly or computed by a callback at scrape time) and
histograms, each with optional labels. Any subsystem may register its own
metrics on the node's registry (``node.metrics``)::

    frames = registry.counter("onair_rtmp_frames_total", "Frames received", ("kind",))
    frames.inc(kind="video")
    registry.gauge("onair_live_publishers", "Live publishers", callback=lambda: len(hub))
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


_M = TypeVar("_M", bound="_Metric")


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        # per request on hot paths: no sets unless the labels are wrong
        if len(labels) == len(self.labelnames):
            try:
                return tuple(map(str, map(labels.__getitem__, self.labelnames)))
            except KeyError:
                pass
        raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.labelnames)}")

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.labelnames, k)} {_fmt(v)}" for k, v in items]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        callback: Callable[[], float | dict[LabelValues, float]] | None = None,
    ) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[LabelValues, float] = {}
        self.callback = callback

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        if self.callback is not None:
            got = self.callback()
            items = sorted(got.items()) if isinstance(got, dict) else [((), float(got))]
        else:
            with self._lock:
                items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.labelnames, k)} {_fmt(v)}" for k, v in items]


DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help, labelnames)
        self.buckets = tuple(sorted(buckets))
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                counts = self._counts[key] = [0] * (len(self.buckets) + 1)
                self._sums[key] = 0.0
            # one slot per bucket (the last is +Inf), cumulated when rendered: an
            # observation costs a bisect, not a walk over every bound
            counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sums[key] += value

    def count(self, **labels: str) -> int:
        counts = self._counts.get(self._key(labels))
        return sum(counts) if counts else 0

    def samples(self) -> list[str]:
        out: list[str] = []
        with self._lock:
            items = sorted(
                (k, list(itertools.accumulate(v)), self._sums[k]) for k, v in self._counts.items()
            )
        for key, counts, total in items:
            for bound, n in zip(self.buckets, counts, strict=False):
                le = f'le="{_fmt(bound)}"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {n}")
            inf = 'le="+Inf"'
            out.append(f"{self.name}_bucket{_labels(self.labelnames, key, inf)} {counts[-1]}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_fmt(total)}")
            out.append(f"{self.name}_count{_labels(self.labelnames, key)} {counts[-1]}")
        return out


AsyncCollector = Callable[[], Awaitable[None]]


class Registry:
    """Holds metrics by name; `render()` produces the exposition text."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[AsyncCollector] = []

    def _add(
        self, kind: type[_M], name: str, labelnames: Sequence[str], make: Callable[[], _M]
    ) -> _M:
        """The metric registered under `name`, made by `make` the first time (callers
        ask per request: no metric, lock included, is built just to be dropped)."""
        existing = self._metrics.get(name)
        if existing is not None:
            if type(existing) is not kind or existing.labelnames != tuple(labelnames):
                raise ValueError(f"metric {name} already registered differently")
            return existing
        metric = make()
        self._metrics[name] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter, name, labelnames, lambda: Counter(name, help, labelnames))

    def gauge(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        callback: Callable[[], float | dict[LabelValues, float]] | None = None,
    ) -> Gauge:
        return self._add(Gauge, name, labelnames, lambda: Gauge(name, help, labelnames, callback))

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        return self._add(
            Histogram, name, labelnames, lambda: Histogram(name, help, labelnames, buckets)
        )

    def add_collector(self, collector: AsyncCollector) -> None:
        """An async callback run before each scrape (e.g. to read queue depths)."""
        self._collectors.append(collector)

    async def collect(self) -> None:
        for collector in self._collectors:
            await collector()

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._metrics):
            metric = self._metrics[name]
            lines.extend(metric.header())
            lines.extend(metric.samples())
        return "\n".join(lines) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
