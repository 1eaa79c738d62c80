"""Helpers for the rooms service e2e tests (tests/e2e/test_rooms_service.py).

Participants are `tests.support.room_client.RoomClient`s (aiortc) that publish
pre-encoded VP8 video (the service's room codec) and Opus audio, so nothing is
encoded while the test runs:

    room = await api.ok("POST", "/v1/rooms", {"record": True, "empty_timeout_s": 2})
    alice = await join(svc, room["id"], await room_token(api, room["id"], "alice"))
    await publish_av(alice)
    ...
    await alice.close()

`room_events(rx, path)` are the webhook bodies a `WebhookReceiver` got, in arrival order.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import time
from collections.abc import Callable
from typing import Any

import av

from realtime.rooms.rtc import RtcSettings
from tests.control.api.service_process import ServiceProcess
from tests.e2e._service import Api
from tests.support.room_client import (
    EncodedPacket,
    EncodedSource,
    RoomClient,
    encode_opus,
    test_frame,
)
from tests.support.webhook_receiver import WebhookReceiver

RTC = RtcSettings.loopback()
"""aiortc participants gather only on 127.0.0.1."""


@functools.cache
def vp8_packets(
    frames: int = 60, width: int = 320, height: int = 240, fps: int = 30
) -> tuple[EncodedPacket, ...]:
    """A moving test pattern encoded once with libvpx (VP8, keyframe every second)."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.bit_rate = 400_000
    codec.gop_size = fps
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    codec.open()
    out: list[EncodedPacket] = []
    step = 90000 // fps
    for i in range(frames):
        f = test_frame(i, width, height)
        f.pts = i
        out.extend(EncodedPacket(bytes(p), step, bool(p.is_keyframe)) for p in codec.encode(f))
    out.extend(EncodedPacket(bytes(p), step, bool(p.is_keyframe)) for p in codec.encode(None))
    assert out and out[0].keyframe
    return tuple(out)


@functools.cache
def opus_packets() -> tuple[EncodedPacket, ...]:
    return tuple(encode_opus(100))


async def room_token(api: Api, room_id: str, identity: str, **fields: Any) -> str:
    data = await api.ok("POST", f"/v1/rooms/{room_id}/tokens", {"identity": identity, **fields})
    return str(data["token"])


async def join(svc: ServiceProcess, room_id: str, token: str) -> RoomClient:
    """A connected participant (its `joined` message checked)."""
    c = RoomClient(svc.url, room_id, token, rtc=RTC)
    joined = await c.connect()
    assert joined["type"] == "joined", joined
    return c


async def publish_av(c: RoomClient) -> dict[str, Any]:
    """Publish looping Opus + VP8 (pre-encoded); returns the server's answer."""
    ans = await c.publish(
        [
            (EncodedSource("audio", opus_packets(), 48000), "microphone"),
            (EncodedSource("video", vp8_packets(), 90000), "camera"),
        ]
    )
    assert ans["type"] == "answer", ans
    return ans


async def until(pred: Callable[[], bool], within: float, what: str) -> None:
    end = time.monotonic() + within
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(f"{what} not within {within}s")
        await asyncio.sleep(0.05)


def room_events(rx: WebhookReceiver, path: str) -> list[dict[str, Any]]:
    """The verified webhook bodies that reached `path`, first delivery of each event only."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for r in rx.at(path):
        assert r.verified, f"webhook failed standardwebhooks verification: {r.headers}"
        body = r.json
        if body["id"] not in seen:
            seen.add(body["id"])
            out.append(body)
    return out


async def delivered(
    rx: WebhookReceiver, path: str, *, until_types: set[str], within: float = 15.0
) -> list[dict[str, Any]]:
    """Wait until webhooks of every type in `until_types` reached `path`; the bodies
    (deduplicated, verified), in arrival order."""
    end = time.monotonic() + within
    while True:
        got = room_events(rx, path)
        if until_types <= {e["type"] for e in got}:
            return got
        if time.monotonic() > end:
            raise TimeoutError(
                f"webhooks {until_types} not all delivered: {[e['type'] for e in got]}"
            )
        await asyncio.sleep(0.1)
