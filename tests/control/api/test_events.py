"""The event log by cursor and as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import time

from tests.control.api.conftest import Api


async def test_log_pages_by_cursor(api: Api) -> None:
    for i in range(5):
        await api.call("POST", "/v1/live-streams", json={"name": str(i)})
    _, first, _ = await api.call("GET", "/v1/events?limit=2")
    assert len(first["data"]) == 2 and first["has_more"] is True
    cursors = [e["cursor"] for e in first["data"]]
    assert cursors == sorted(cursors)
    _, rest, _ = await api.call("GET", f"/v1/events?after={first['next_cursor']}&limit=100")
    assert len(rest["data"]) == 3 and rest["has_more"] is False
    assert rest["data"][0]["cursor"] > cursors[-1]
    assert [e["data"]["name"] for e in first["data"] + rest["data"]] == list("01234")
    status, body, _ = await api.call("GET", "/v1/events?after=-1")
    assert status == 400 and body["error"]["param"] == "after"


async def _read_sse(resp, n: int, within_s: float = 5.0) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    events: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    deadline = time.monotonic() + within_s
    while len(events) < n:
        line = await asyncio.wait_for(resp.content.readline(), deadline - time.monotonic())
        text = line.decode().rstrip("\n")
        if text == "":
            if "data" in cur:
                events.append(cur)
            cur = {}
        elif not text.startswith(":"):
            k, _, v = text.partition(": ")
            cur[k] = v
    return events


async def test_stream_wakes_promptly_and_resumes_with_last_event_id(api: Api) -> None:
    async with api.client.get("/v1/events/stream", headers=api.auth()) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        _, ls, _ = await api.call("POST", "/v1/live-streams", json={})
        (ev,) = await _read_sse(resp, 1)
        assert time.monotonic() - t0 < 0.4  # woken by the commit, not the poll
        assert ev["event"] == "live_stream.created"
        data = json.loads(ev["data"])
        assert data["data"]["id"] == ls["id"] and ev["id"] == str(data["cursor"])
        first_cursor = ev["id"]
    await api.call("POST", f"/v1/live-streams/{ls['id']}/disable")
    headers = api.auth(**{"Last-Event-ID": first_cursor})
    async with api.client.get("/v1/events/stream", headers=headers) as resp:
        (ev,) = await _read_sse(resp, 1)
        assert ev["event"] == "live_stream.disabled"


async def test_stream_sends_heartbeats(make_api) -> None:  # type: ignore[no-untyped-def]
    api = await make_api(sse_heartbeat_s=0.1)
    async with api.client.get("/v1/events/stream", headers=api.auth()) as resp:
        lines = [await asyncio.wait_for(resp.content.readline(), 2) for _ in range(4)]
        assert b": heartbeat\n" in lines
