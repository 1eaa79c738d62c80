"""Beacon bodies: what is kept, what is dropped, what refuses the beacon."""

from __future__ import annotations

from typing import Any

import pytest

from control.analytics.beacons import MAX_EVENTS, BeaconError, parse_beacon

NOW = 1_800_000_000_000


def ev(kind: str, at: float = NOW, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "at": at, **fields}


def test_events_keep_their_own_fields_and_drop_unknown_keys() -> None:
    beacon = parse_beacon(
        {
            "session_id": "s-1",
            "extra": 1,
            "events": [
                ev("quality", NOW + 2, rendition="720p", bitrate=2500, secret="x"),
                ev("start", NOW, player="hls.js", player_version="1.6", cookie="y"),
                ev("error", NOW + 3, code=3, fatal=True, message="network"),
            ],
        }
    )
    assert beacon.session_id == "s-1"
    assert [e.type for e in beacon.events] == ["start", "quality", "error"]  # by time
    assert beacon.events[0].fields == {"player": "hls.js", "player_version": "1.6"}
    assert beacon.events[1].fields == {"rendition": "720p", "bitrate": 2500.0}
    assert beacon.events[2].fields == {"code": "3", "fatal": True, "message": "network"}


def test_an_empty_event_list_is_a_heartbeat() -> None:
    assert parse_beacon({"session_id": "s"}).events == []


def test_the_send_time_and_latency_are_read_when_given() -> None:
    beacon = parse_beacon({"session_id": "s", "sent_at": NOW, "latency_s": 1.25})
    assert (beacon.sent_at_ms, beacon.latency_s) == (NOW, 1.25)
    with pytest.raises(BeaconError, match="latency_s"):
        parse_beacon({"session_id": "s", "latency_s": -1})
    with pytest.raises(BeaconError, match="sent_at"):
        parse_beacon({"session_id": "s", "sent_at": "now"})


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "JSON object"),
        ({"events": []}, "session_id"),
        ({"session_id": "a b"}, "session_id"),
        ({"session_id": "s" * 65}, "session_id"),
        ({"session_id": "s", "events": {}}, "events must be a list"),
        ({"session_id": "s", "events": [ev("play")]}, "type must be one of"),
        ({"session_id": "s", "events": [ev("start", at="now")]}, "Date.now()"),
        ({"session_id": "s", "events": [ev("start", at=1_700_000)]}, "Date.now()"),
        ({"session_id": "s", "events": [ev("error", fatal="yes")]}, "fatal"),
        ({"session_id": "s", "events": [ev("quality", bitrate=-1)]}, "bitrate"),
        ({"session_id": "s", "events": [ev("quality", rendition="x" * 65)]}, "rendition"),
        ({"session_id": "s", "events": [ev("start")] * (MAX_EVENTS + 1)}, "at most"),
    ],
)
def test_a_malformed_beacon_is_refused_saying_why(body: Any, says: str) -> None:
    with pytest.raises(BeaconError, match=says):
        parse_beacon(body)
