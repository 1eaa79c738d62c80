"""`/v1/events`: the durable event log by cursor, and the same as Server-Sent
Events (`/v1/events/stream`: ``id:`` = cursor, honours ``Last-Event-ID``,
heartbeat comments, woken right after local commits and polling the store for
events committed by other nodes)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from control.domain.api_keys import rfc3339
from control.http.helpers import DATETIME, READ_ERRORS, errors, json_ok, ref, resp
from control.http.middleware import requires, streaming
from control.http.node_key import node_of
from control.http.validation import ApiError, query_int, reject_unknown_query
from control.store.base import Event, Store

MAX_CURSOR = 2**62


def render_event(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "object": "event",
        "cursor": e.cursor,
        "type": e.type,
        "resource_id": e.resource_id,
        "sequence": e.sequence,
        "created_at": rfc3339(e.created_at),
        "data": e.data,
    }


def _cursor(raw: str | None, name: str) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be an integer cursor", name
        ) from None
    if not 0 <= value <= MAX_CURSOR:
        raise ApiError(400, "invalid_parameter", f"{name} is out of range", name)
    return value


async def check_not_expired(store: Store, cursor: int) -> None:
    """410 for a cursor retention has passed: events after it are gone, and a
    poller must know it missed them rather than silently skip ahead."""
    if cursor > 0 and cursor < await store.events_trimmed_through():
        raise ApiError(
            410,
            "cursor_expired",
            "Events after this cursor are older than the retention period and were "
            "deleted; resynchronise from the API and continue from a newer cursor",
            "after",
        )


@requires("read")
async def list_events(request: web.Request) -> web.Response:
    reject_unknown_query(request, ("after", "limit"))
    after = _cursor(request.query.get("after"), "after") or 0
    limit = query_int(request, "limit", 25, minimum=1, maximum=100)
    store = node_of(request).store
    await check_not_expired(store, after)
    events = await store.events_after(after, limit + 1)
    page = events[:limit]
    next_cursor = page[-1].cursor if page else after
    return json_ok(
        {
            "object": "list",
            "data": [render_event(e) for e in page],
            "has_more": len(events) > limit,
            "next_cursor": next_cursor,
        }
    )


@streaming
@requires("read")
async def stream_events(request: web.Request) -> web.StreamResponse:
    reject_unknown_query(request, ("after",))
    node = node_of(request)
    settings = node.settings
    store = node.store
    notifier = node.notifier
    state = node.state
    header = request.headers.get("Last-Event-ID")
    cursor = _cursor(header, "Last-Event-ID") if header else None
    if cursor is None:
        after = _cursor(request.query.get("after"), "after")
        cursor = after if after is not None else await store.last_event_cursor()
    await check_not_expired(store, cursor)

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        await response.write(b"retry: 2000\n\n")
        last_write = time.monotonic()
        while not notifier.closed and not state.shutting_down:
            events = await store.events_after(cursor, 100)
            if events:
                chunks = []
                for e in events:
                    payload = json.dumps(render_event(e), separators=(",", ":"))
                    chunks.append(f"id: {e.cursor}\nevent: {e.type}\ndata: {payload}\n\n")
                    cursor = e.cursor
                await response.write("".join(chunks).encode())
                last_write = time.monotonic()
                if len(events) == 100:
                    continue
            if time.monotonic() - last_write >= settings.sse_heartbeat_s:
                await response.write(b": heartbeat\n\n")
                last_write = time.monotonic()
            wait = min(settings.event_poll_s, settings.sse_heartbeat_s)
            await notifier.wait(wait)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/events", list_events)
    app.router.add_get("/v1/events/stream", stream_events)


EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "cursor", "type", "sequence", "created_at", "data"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["event"]},
        "cursor": {"type": "integer", "description": "Global position; pass as `after`"},
        "type": {"type": "string", "examples": ["live_stream.created"]},
        "resource_id": {"type": "string"},
        "sequence": {"type": "integer", "description": "Increasing per resource"},
        "created_at": DATETIME,
        "data": {"type": "object", "description": "The resource as it was after the change"},
    },
}
_CURSOR_PARAM = {
    "name": "after",
    "in": "query",
    "required": False,
    "description": "Return events after this cursor (default 0 for the log, now for the stream)",
    "schema": {"type": "integer", "minimum": 0},
}
_TAG = ["Events"]
OPENAPI: dict[str, Any] = {
    "tags": [{"name": "Events", "description": "The durable event log (what webhooks deliver)"}],
    "paths": {
        "/v1/events": {
            "get": {
                "tags": _TAG,
                "operationId": "listEvents",
                "summary": "Events after a cursor, oldest first",
                "parameters": [
                    _CURSOR_PARAM,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 25},
                    },
                ],
                "responses": {
                    "200": resp(
                        "A page of events",
                        {
                            "type": "object",
                            "required": ["data", "has_more", "next_cursor"],
                            "properties": {
                                "object": {"type": "string", "enum": ["list"]},
                                "data": {"type": "array", "items": ref("Event")},
                                "has_more": {"type": "boolean"},
                                "next_cursor": {"type": "integer"},
                            },
                        },
                    ),
                    **errors(*READ_ERRORS, 410),
                },
            }
        },
        "/v1/events/stream": {
            "get": {
                "tags": _TAG,
                "operationId": "streamEvents",
                "summary": "Server-Sent Events; `id:` is the cursor, Last-Event-ID resumes",
                "x-streaming": True,
                "parameters": [
                    _CURSOR_PARAM,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "text/event-stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **errors(*READ_ERRORS, 410),
                },
            }
        },
    },
    "components": {"schemas": {"Event": EVENT_SCHEMA}},
}
