"""The SFU forwards encoded media byte for byte, with keyframe requests routed
to the publisher, and a slow subscriber never holds the others back."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from realtime.rooms.rtc import RtcSettings
from tests.support.room_client import EncodedSource, RoomClient, encode_h264, encode_opus

from .conftest import RoomServer

pytestmark = pytest.mark.e2e
RTC = RtcSettings.loopback()


def nals(annexb: bytes) -> list[bytes]:
    out = []
    for chunk in annexb.split(b"\x00\x00\x01"):
        chunk = chunk.rstrip(b"\x00") if chunk.endswith(b"\x00") else chunk
        if chunk:
            out.append(chunk)
    return out


async def wait_until(pred, within_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_h264_and_opus_frames_arrive_byte_exact(h264_room_server: RoomServer) -> None:
    srv = h264_room_server
    video = encode_h264(90)
    audio = encode_opus(100)
    sent_video = {tuple(nals(p.data)): i for i, p in enumerate(video)}
    sent_audio = {p.data: i for i, p in enumerate(audio)}
    assert len(sent_video) == len(video) and len(sent_audio) == len(audio)

    pub = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "alice"), rtc=RTC)
    sub = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "bob", can_publish=False), rtc=RTC)
    try:
        assert (await pub.connect())["type"] == "joined"
        assert (await sub.connect())["type"] == "joined"
        ans = await pub.publish(
            [
                (EncodedSource("audio", audio, 48000), "microphone"),
                (EncodedSource("video", video, 90000), "camera"),
            ]
        )
        assert ans["type"] == "answer"

        def got() -> bool:
            kinds = {r.kind: len(r.frames) for r in sub.received.values()}
            return kinds.get("video", 0) >= 45 and kinds.get("audio", 0) >= 50

        await wait_until(got, 15)
        vrec = next(r for r in sub.received.values() if r.kind == "video")
        arec = next(r for r in sub.received.values() if r.kind == "audio")
        assert vrec.identity == "alice" and arec.identity == "alice"
        assert all(f.mime_type.lower() == "video/h264" for f in vrec.frames)
        # Every received video frame is exactly one frame the publisher sent.
        idx = [sent_video.get(tuple(nals(f.data))) for f in vrec.frames]
        assert None not in idx, "a received frame differs from every sent frame"
        assert idx[0] is not None and video[idx[0]].keyframe, "subscribers start at a keyframe"
        # Audio: Opus packets unchanged.
        aidx = [sent_audio.get(f.data) for f in arec.frames]
        assert None not in aidx
        # RTP timestamps advance by the publisher's frame durations.
        ts = [f.timestamp for f in vrec.frames[:20]]
        assert all((b - a) % 2**32 == 3000 for a, b in itertools.pairwise(ts)), ts
    finally:
        await pub.close()
        await sub.close()


async def test_subscriber_keyframe_request_reaches_publisher(h264_room_server: RoomServer) -> None:
    srv = h264_room_server
    pub = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "alice"), rtc=RTC)
    sub = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "bob"), rtc=RTC)
    try:
        await pub.connect()
        await sub.connect()
        await pub.publish([(EncodedSource("video", encode_h264(300, gop=300), 90000), "camera")])
        await wait_until(lambda: any(len(r.frames) > 5 for r in sub.received.values()), 15)
        session = srv.service.rooms["RM_a"].sessions["alice"]
        src = next(iter(session.sources.values()))
        # The subscriber's PLI arrives at our sender; we ask the publisher.
        assert pub.pub_pc is not None
        sender = pub.pub_pc.getTransceivers()[0].sender
        seen: list[bool] = []
        orig = sender._send_keyframe

        def spy() -> None:
            seen.append(True)
            orig()

        sender._send_keyframe = spy  # type: ignore[method-assign]
        assert sub.sub_pc is not None
        rx = sub.sub_pc.getTransceivers()[0].receiver
        ssrc = rx.getSynchronizationSources()[0].source
        await rx._send_rtcp_pli(ssrc)
        await wait_until(lambda: bool(seen), 5)
        assert src.frames > 0
    finally:
        await pub.close()
        await sub.close()


async def test_a_slow_subscriber_does_not_slow_the_others(h264_room_server: RoomServer) -> None:
    srv = h264_room_server
    pub = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "alice"), rtc=RTC)
    fast = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "fast"), rtc=RTC)
    slow = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "slow"), rtc=RTC)
    try:
        for c in (pub, fast, slow):
            await c.connect()
        await pub.publish([(EncodedSource("video", encode_h264(60), 90000), "camera")])
        await wait_until(
            lambda: len(srv.service.rooms["RM_a"].sessions["slow"].subscribe.tracks) == 1, 10
        )
        slow_track = next(
            iter(srv.service.rooms["RM_a"].sessions["slow"].subscribe.tracks.values())
        )
        # Freeze the slow subscriber's sender: its buffer fills, stays bounded.
        slow_track.recv = _never  # type: ignore[method-assign]
        await wait_until(lambda: any(len(r.frames) > 60 for r in fast.received.values()), 15)
        assert slow_track.pending <= 90
        assert slow_track.dropped > 0 or slow_track.pending > 0
    finally:
        for c in (pub, fast, slow):
            await c.close()


async def _never():  # type: ignore[no-untyped-def]
    await asyncio.Event().wait()


async def test_tracks_come_and_go_with_renegotiation_and_mute(h264_room_server: RoomServer) -> None:
    srv = h264_room_server
    alice = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "alice"), rtc=RTC)
    carol = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "carol"), rtc=RTC)
    sub = RoomClient(srv.base_url, "RM_a", srv.token("RM_a", "bob", can_publish=False), rtc=RTC)
    carol_video = encode_h264(60, gop=15)
    try:
        for c in (alice, carol, sub):
            await c.connect()
        await alice.publish([(EncodedSource("video", encode_h264(60, gop=15), 90000), "camera")])
        pub_msg = await sub.wait_for(lambda m: m["type"] == "track_published")
        tid = pub_msg["track"]["track_id"]
        await wait_until(lambda: tid in sub.received and len(sub.received[tid].frames) > 10)

        # Mute: everyone hears about it and forwarding pauses.
        await alice.send({"type": "mute", "track_id": tid, "muted": True})
        muted = await sub.wait_for(lambda m: m["type"] == "muted")
        assert muted == {"type": "muted", "identity": "alice", "track_id": tid, "muted": True}
        await asyncio.sleep(0.3)
        n = len(sub.received[tid].frames)
        await asyncio.sleep(0.5)
        assert len(sub.received[tid].frames) <= n + 1
        await alice.send({"type": "mute", "track_id": tid, "muted": False})
        await wait_until(lambda: len(sub.received[tid].frames) > n + 5)

        # Unpublish: a new offer retires the transceiver.
        session = srv.service.rooms["RM_a"].sessions["bob"]
        before = session.subscribe.negotiations
        await alice.send({"type": "unpublish", "track_ids": [tid]})
        gone = await sub.wait_for(lambda m: m["type"] == "track_unpublished")
        assert gone == {"type": "track_unpublished", "identity": "alice", "track_id": tid}
        await wait_until(lambda: session.subscribe.negotiations > before)
        assert session.subscribe.tracks == {}

        # Carol's new video reuses the inactive transceiver.
        assert sub.sub_pc is not None
        transceivers = len(sub.sub_pc.getTransceivers())
        await carol.publish([(EncodedSource("video", carol_video, 90000), "camera")])
        msg = await sub.wait_for(lambda m: m["type"] == "track_published")
        tid2 = msg["track"]["track_id"]
        await wait_until(lambda: tid2 in sub.received and len(sub.received[tid2].frames) > 10)
        assert len(sub.sub_pc.getTransceivers()) == transceivers
        sent = {tuple(nals(p.data)) for p in carol_video}
        assert all(tuple(nals(f.data)) in sent for f in sub.received[tid2].frames)
    finally:
        for c in (alice, carol, sub):
            await c.close()
