"""A view from beacons and CMCD, one node's part, and several parts merged."""

from __future__ import annotations

from typing import Any

from control.analytics.beacons import Beacon, BeaconEvent
from control.analytics.cmcd import Cmcd
from control.analytics.view import ViewPart, summarize

T0 = 1_800_000_000.0
SKEW = 7.5
"""The player's clock runs this far ahead of the server's."""


def send(p: ViewPart, now: float, *events: tuple[Any, ...], sent: bool = True) -> None:
    """A beacon the player sent at `now` (server time) with `events` at their
    server times, stamped on its own clock."""
    out = [BeaconEvent(e[0], (e[1] + SKEW) * 1000, e[2] if len(e) > 2 else {}) for e in events]
    p.beacon(now, Beacon("s", out, (now + SKEW) * 1000 if sent else None))


def part(node: str = "n1") -> ViewPart:
    return ViewPart("vw_1", "pid", node, T0, T0)


def test_startup_stalls_and_watch_time_come_from_the_players_clock() -> None:
    p = part()
    send(
        p,
        T0 + 1.5,
        ("start", T0),
        ("first_frame", T0 + 1.2),
        ("quality", T0 + 1.2, {"rendition": "720p", "bitrate": 2000}),
    )
    send(p, T0 + 12, ("stall_start", T0 + 10), ("stall_end", T0 + 11.5))
    send(p, T0 + 20.2, ("end", T0 + 20))
    v = summarize([p.to_dict()])
    assert v["startup_time_ms"] == 1200
    assert (v["rebuffer_count"], v["rebuffer_ms"]) == (1, 1500)
    assert v["watch_time_ms"] == 20000
    assert v["ended_at"] is not None and abs(v["ended_at"] - (T0 + 20)) < 0.5
    assert v["average_bitrate_kbps"] == 2000 and v["renditions"] == ["720p"]
    assert v["measured"] is True


def test_waiting_before_the_first_frame_is_startup_not_a_rebuffer() -> None:
    p = part()
    send(p, T0 + 3, ("start", T0), ("stall_start", T0 + 0.5), ("first_frame", T0 + 2.5))
    v = summarize([p.to_dict()])
    assert v["startup_time_ms"] == 2500 and v["rebuffer_count"] == 0


def test_an_open_stall_lasts_until_the_view_ends() -> None:
    p = part()
    send(p, T0 + 6, ("start", T0), ("first_frame", T0 + 1), ("stall_start", T0 + 5))
    p.last_seen = T0 + 9
    p.idle_cut()
    v = summarize([p.to_dict()])
    assert v["rebuffer_ms"] == 4000 and v["ended_at"] == T0 + 9


def test_without_sent_at_the_soonest_beacon_fixes_the_clock() -> None:
    p = part()
    send(p, T0 + 9, ("start", T0), ("first_frame", T0 + 1), sent=False)  # 8 s late
    send(p, T0 + 10.05, ("stall_start", T0 + 10), sent=False)
    send(p, T0 + 12.02, ("stall_end", T0 + 12), sent=False)
    v = summarize([p.to_dict()])
    assert abs(v["started_at"] - T0) < 0.1 and v["startup_time_ms"] == 1000
    assert v["stalls"] and abs(v["stalls"][0][0] - (T0 + 10)) < 0.1


def test_a_fatal_error_is_the_views_failure() -> None:
    p = part()
    send(p, T0 + 2, ("start", T0), ("error", T0 + 1, {"code": "manifestLoadError", "fatal": True}))
    v = summarize([p.to_dict()])
    assert v["errors"] == 1 and v["fatal_error"] == "manifestLoadError"
    assert v["startup_time_ms"] is None


def test_requests_alone_make_an_unmeasured_view() -> None:
    p = part()
    for i in range(10):
        p.request(T0 + i, None)
    v = summarize([p.to_dict()])
    assert v["measured"] is False and v["watch_time_ms"] == 9000 and v["startup_time_ms"] is None


def test_cmcd_gives_bitrate_latency_and_starvations() -> None:
    p = part()
    p.request(T0, Cmcd(sid="s", br=800, ot="v", ltc=1500))
    p.request(T0 + 1, Cmcd(sid="s", br=1200, ot="v", ltc=1700, bs=True))
    p.request(T0 + 1, Cmcd(sid="s", br=128, ot="a"))  # audio does not count
    v = summarize([p.to_dict()])
    assert v["measured"] and v["average_bitrate_kbps"] == 1000
    assert v["latency_s"] == 1.6 and v["rebuffer_count"] == 1


def test_beacons_latency_is_the_views_latency_to_live() -> None:
    p = part()
    for i, latency in enumerate((1.0, 1.5, 2.0)):
        p.beacon(T0 + i, Beacon("s", [], None, latency))
    assert summarize([p.to_dict()])["latency_s"] == 1.5


def test_two_nodes_parts_merge_into_one_view() -> None:
    a, b = part("n1"), part("n2")
    send(a, T0 + 1, ("start", T0), ("first_frame", T0 + 0.8))
    b.first_seen = b.last_seen = T0 + 5
    send(b, T0 + 11, ("stall_start", T0 + 10))
    send(a, T0 + 12.1, ("stall_end", T0 + 12))  # the same stall, heard apart
    send(b, T0 + 30, ("stall_end", T0 + 12), ("end", T0 + 30))
    a.last_seen = T0 + 13
    a.idle_cut()
    v = summarize([a.to_dict(), b.to_dict()])
    assert v["startup_time_ms"] == 800
    assert v["watch_time_ms"] == 30000
    assert v["node"] == "n2"
    # b never saw the first frame, so its stall has a start; a closed it: one stall
    assert v["rebuffer_count"] == 1 and 1900 <= v["rebuffer_ms"] <= 2100


def test_the_view_is_not_over_while_one_node_still_serves_it() -> None:
    a, b = part("n1"), part("n2")
    a.idle_cut()
    assert summarize([a.to_dict(), b.to_dict()])["ended_at"] is None
