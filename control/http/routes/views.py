"""Viewer analytics in the API (read): ``GET /v1/views`` lists view sessions
(`control.analytics.view`), ``GET /v1/metrics/{metric}/timeseries`` their
figures over time for a live stream or an asset (`control.analytics.series`),
and ``GET /v1/live-streams/{id}/timeline`` puts a stream's events (with the
API key that caused them, `control.timeline`), its viewers' rebuffers, and
its viewer and ingest series on one time axis.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from control.analytics.series import (
    INTERVALS,
    MAX_POINTS,
    METRICS,
    ingest_series,
    view_series,
    views_in,
)
from control.analytics.view import COLLECTION
from control.domain.assets import COLLECTION as ASSETS
from control.domain.live_streams import COLLECTION as LIVE_STREAMS
from control.domain.live_streams import rfc3339
from control.http.helpers import (
    NULLABLE_DATETIME,
    PAGE_PARAMS,
    READ_ERRORS,
    check_starting_after,
    errors,
    json_ok,
    list_of,
    page_params,
    ref,
    resp,
)
from control.http.middleware import requires
from control.http.node_key import node_of
from control.http.validation import ApiError, query_str, reject_unknown_query
from control.ingest_health import read_minutes
from control.store.base import Record
from control.timeline import read_timeline
from control.webhooks.model import parse_time

_FILTERS = ("live_stream_id", "asset_id", "playback_id", "player", "node")


def view_json(rec: Record) -> dict[str, Any]:
    d = rec.data
    return {
        "id": rec.id,
        "object": "view",
        "playback_id": d["playback_id"],
        "live_stream_id": d.get("live_stream_id"),
        "asset_id": d.get("asset_id"),
        "started_at": rfc3339(d["started_at"]),
        "ended_at": rfc3339(d.get("ended_at")),
        "measured": bool(d.get("measured")),
        "startup_time_ms": d.get("startup_time_ms"),
        "watch_time_ms": d.get("watch_time_ms", 0),
        "rebuffer_count": d.get("rebuffer_count", 0),
        "rebuffer_ms": d.get("rebuffer_ms", 0),
        "errors": d.get("errors", 0),
        "fatal_error": d.get("fatal_error"),
        "average_bitrate_kbps": d.get("average_bitrate_kbps"),
        "renditions": list(d.get("renditions", [])),
        "latency_s": d.get("latency_s"),
        "player": d.get("player"),
        "node": d.get("node"),
    }


def _one_filter(request: web.Request, names: tuple[str, ...]) -> tuple[str, str] | None:
    given = [(n, v) for n in names if (v := query_str(request, n, max_length=128)) is not None]
    if len(given) > 1:
        raise ApiError(400, "invalid_parameter", f"give at most one of {', '.join(names)}")
    return given[0] if given else None


@requires("read")
async def list_views(request: web.Request) -> web.Response:
    limit, after = page_params(request, extra=_FILTERS)
    where = _one_filter(request, _FILTERS)
    store = node_of(request).store
    await check_starting_after(store, COLLECTION, after)
    page = await store.list(COLLECTION, limit=limit, starting_after=after, where=where)
    return json_ok(
        {"object": "list", "data": [view_json(r) for r in page.data], "has_more": page.has_more}
    )


def _time(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = parse_time(float(raw))
    except ValueError:
        value = parse_time(raw)
    if value is None:
        raise ApiError(400, "invalid_parameter", f"{name} must be RFC 3339 or Unix seconds", name)
    return value


def _range(request: web.Request) -> tuple[str, int, float, float]:
    """(interval, its seconds, from, to) of the query."""
    interval = request.query.get("interval", "minute")
    if interval not in INTERVALS:
        raise ApiError(400, "invalid_parameter", "interval must be minute or hour", "interval")
    step = INTERVALS[interval]
    end = _time(request, "to", time.time())
    start = _time(request, "from", end - (3600 if interval == "minute" else 24 * 3600))
    if end <= start:
        raise ApiError(400, "invalid_parameter", "from must be before to", "from")
    if (end - start) / step > MAX_POINTS:
        raise ApiError(
            400,
            "invalid_parameter",
            f"at most {MAX_POINTS} points: a shorter range or interval=hour",
            "from",
        )
    return interval, step, start, end


def _points(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**point, "t": rfc3339(point["t"])} for point in data]


TIMELINE_SERIES = ("viewers", "startup_time", "rebuffer_percentage", "ingest_bitrate")
MAX_REBUFFERS = 500


@requires("read")
async def timeline(request: web.Request) -> web.Response:
    reject_unknown_query(request, ("from", "to", "interval"))
    live_id = request.match_info["id"]
    interval, step, start, end = _range(request)
    store = node_of(request).store
    if await store.get(LIVE_STREAMS, live_id) is None:
        raise ApiError(404, "not_found", f"No such live stream: {live_id}")
    entries = await read_timeline(store, live_id, start, end)
    events: list[dict[str, Any]] = [
        {
            "at": rfc3339(e["at"]),
            "type": e["type"],
            "actor": e.get("actor"),
            "data": e.get("data") or {},
        }
        for e in entries
    ]
    views = await views_in(store, ("live_stream_id", live_id), start, end)
    rebuffers = sorted(
        (s0, s1, r) for r in views for s0, s1 in r.get("stalls", []) if start <= s0 < end
    )[:MAX_REBUFFERS]
    events += [
        {
            "at": rfc3339(s0),
            "type": "view.rebuffer",
            "actor": None,
            "data": {"duration_ms": round((s1 - s0) * 1000), "playback_id": r["playback_id"]},
        }
        for s0, s1, r in rebuffers
    ]
    events.sort(key=lambda e: str(e["at"]))
    series = {
        metric: _points(view_series(metric, views, start, end, step))
        for metric in TIMELINE_SERIES
        if metric != "ingest_bitrate"
    }
    minutes = await read_minutes(store, live_id, start, end)
    series["ingest_bitrate"] = _points(ingest_series(minutes, start, end, step))
    return json_ok(
        {
            "object": "timeline",
            "live_stream_id": live_id,
            "from": rfc3339(start),
            "to": rfc3339(end),
            "interval": interval,
            "events": events,
            "series": series,
        }
    )


@requires("read")
async def timeseries(request: web.Request) -> web.Response:
    metric = request.match_info["metric"]
    if metric not in METRICS:
        raise ApiError(404, "not_found", f"No such metric; one of {', '.join(METRICS)}")
    reject_unknown_query(request, ("live_stream_id", "asset_id", "from", "to", "interval"))
    interval, step, start, end = _range(request)
    where = _one_filter(request, ("live_stream_id", "asset_id"))
    if where is None:
        raise ApiError(400, "invalid_parameter", "give live_stream_id or asset_id")
    store = node_of(request).store
    kind, object_id = where
    if await store.get(LIVE_STREAMS if kind == "live_stream_id" else ASSETS, object_id) is None:
        raise ApiError(404, "not_found", f"No such {kind[:-3].replace('_', ' ')}: {object_id}")
    if metric == "ingest_bitrate":
        if kind != "live_stream_id":
            raise ApiError(400, "invalid_parameter", "ingest_bitrate is a live stream's")
        data = ingest_series(await read_minutes(store, object_id, start, end), start, end, step)
    else:
        views = await views_in(store, where, start, end)
        data = view_series(metric, views, start, end, step)
    return json_ok(
        {
            "object": "timeseries",
            "metric": metric,
            "interval": interval,
            kind: object_id,
            "data": _points(data),
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/views", list_views)
    app.router.add_get("/v1/metrics/{metric}/timeseries", timeseries)
    app.router.add_get("/v1/live-streams/{id}/timeline", timeline)


_INT = {"type": "integer"}
_NULL_INT = {"type": ["integer", "null"]}
_NULL_NUM = {"type": ["number", "null"]}
_NULL_STR = {"type": ["string", "null"]}
VIEW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "playback_id", "started_at", "measured", "watch_time_ms"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["view"]},
        "playback_id": {"type": "string"},
        "live_stream_id": _NULL_STR,
        "asset_id": _NULL_STR,
        "started_at": {"type": "string", "format": "date-time"},
        "ended_at": NULLABLE_DATETIME,
        "measured": {
            "type": "boolean",
            "description": "false: the player sent neither CMCD nor beacons "
            "(counted from its requests: address, user agent, playback id)",
        },
        "startup_time_ms": {**_NULL_INT, "description": "start to first frame (beacons)"},
        "watch_time_ms": {**_INT, "description": "start to end, startup and stalls included"},
        "rebuffer_count": _INT,
        "rebuffer_ms": _INT,
        "errors": _INT,
        "fatal_error": {**_NULL_STR, "description": "The code of the error that ended it"},
        "average_bitrate_kbps": _NULL_INT,
        "renditions": {"type": "array", "items": {"type": "string"}},
        "latency_s": {**_NULL_NUM, "description": "Mean latency to live (CMCD ltc)"},
        "player": _NULL_STR,
        "node": _NULL_STR,
    },
}
_QUERY = [
    {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
    for n in ("live_stream_id", "asset_id")
]
_RANGE = [
    {
        "name": "from",
        "in": "query",
        "description": "RFC 3339 or Unix seconds (default: an hour, or a day for "
        "interval=hour, before `to`)",
        "schema": {"type": "string"},
    },
    {
        "name": "to",
        "in": "query",
        "description": "RFC 3339 or Unix seconds (default: now)",
        "schema": {"type": "string"},
    },
    {
        "name": "interval",
        "in": "query",
        "schema": {"type": "string", "enum": list(INTERVALS), "default": "minute"},
    },
]
_POINT = {
    "type": "object",
    "required": ["t", "value", "count"],
    "properties": {
        "t": {"type": "string", "format": "date-time"},
        "value": _NULL_NUM,
        "count": _INT,
    },
}
OPENAPI: dict[str, Any] = {
    "tags": [{"name": "Analytics", "description": "Viewer experience: views and metrics"}],
    "paths": {
        "/v1/views": {
            "get": {
                "tags": ["Analytics"],
                "operationId": "listViews",
                "summary": "View sessions, newest first (at most one filter)",
                "parameters": [
                    *PAGE_PARAMS,
                    *_QUERY,
                    {"name": "playback_id", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "player",
                        "in": "query",
                        "description": "The player family its beacons named (hls.js, webrtc...)",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "node",
                        "in": "query",
                        "description": "The node that served it last",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {"200": resp("Views", list_of("View")), **errors(*READ_ERRORS)},
            }
        },
        "/v1/live-streams/{id}/timeline": {
            "get": {
                "tags": ["Analytics"],
                "operationId": "liveStreamTimeline",
                "summary": "A live stream's events (with the API key that caused them), "
                "its viewers' rebuffers, and its viewer and ingest series on one time axis",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    *_RANGE,
                ],
                "responses": {
                    "200": resp("The timeline", ref("Timeline")),
                    **errors(*READ_ERRORS),
                },
            }
        },
        "/v1/metrics/{metric}/timeseries": {
            "get": {
                "tags": ["Analytics"],
                "operationId": "metricTimeseries",
                "summary": "A metric of a live stream or an asset, per minute or hour",
                "parameters": [
                    {
                        "name": "metric",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(METRICS)},
                    },
                    *_QUERY,
                    *_RANGE,
                ],
                "responses": {
                    "200": resp("The series", ref("Timeseries")),
                    **errors(*READ_ERRORS),
                },
            }
        },
    },
    "components": {
        "schemas": {
            "View": VIEW_SCHEMA,
            "Timeseries": {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "object": {"type": "string", "enum": ["timeseries"]},
                    "metric": {"type": "string"},
                    "interval": {"type": "string"},
                    "data": {"type": "array", "items": _POINT},
                },
            },
            "Timeline": {
                "type": "object",
                "required": ["live_stream_id", "events", "series"],
                "properties": {
                    "object": {"type": "string", "enum": ["timeline"]},
                    "live_stream_id": {"type": "string"},
                    "from": {"type": "string", "format": "date-time"},
                    "to": {"type": "string", "format": "date-time"},
                    "interval": {"type": "string"},
                    "events": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["at", "type"],
                            "properties": {
                                "at": {"type": "string", "format": "date-time"},
                                "type": {
                                    "type": "string",
                                    "description": "live_stream.* events, view.rebuffer",
                                },
                                "actor": {
                                    "type": ["object", "null"],
                                    "description": "The API key whose request caused it",
                                    "properties": {
                                        "api_key_id": {"type": "string"},
                                        "name": _NULL_STR,
                                    },
                                },
                                "data": {"type": "object"},
                            },
                        },
                    },
                    "series": {
                        "type": "object",
                        "description": "viewers, startup_time, rebuffer_percentage, ingest_bitrate",
                        "additionalProperties": {"type": "array", "items": _POINT},
                    },
                },
            },
        }
    },
}
