"""The sans-IO RTMP session: the command exchange real publishers wait for, from bytes."""

from __future__ import annotations

from typing import Any

import pytest
from rtmpclient import (
    FFMPEG_CAPTURE,
    GSTREAMER_CAPTURE,
    ClientWriter,
    audio_config_tag,
    audio_frame_tag,
    handshake_bytes,
    metadata,
    publish_prologue,
    video_config_tag,
    video_frame_tag,
)

from ingest.rtmp.chunk import ChunkReader
from ingest.rtmp.errors import ProtocolError
from ingest.rtmp.messages import Command, UserControl
from ingest.rtmp.session import (
    AudioData,
    Closed,
    Connect,
    HandshakeDone,
    MetaData,
    Publish,
    RtmpSession,
    State,
    Unpublish,
    VideoData,
)


class Peer:
    """Reads what the server sent, as a client would."""

    def __init__(self) -> None:
        self.reader = ChunkReader()
        self.skipped = 0

    def replies(self, data: bytes) -> list[tuple[int, Any]]:
        if self.skipped < 3073:
            n = min(3073 - self.skipped, len(data))
            self.skipped += n
            data = data[n:]
        out: list[tuple[int, Any]] = []
        for m in self.reader.feed(data):
            if m.type_id == 20:
                out.append((m.type_id, Command.parse(m.payload)))
            elif m.type_id == 4:
                out.append((m.type_id, UserControl.parse(m.payload)))
            else:
                out.append((m.type_id, int.from_bytes(m.payload[:4], "big")))
        return out


def events(s: RtmpSession) -> list[Any]:
    out = []
    while (ev := s.next_event()) is not None:
        out.append(ev)
    return out


def commands(replies: list[tuple[int, Any]]) -> list[Command]:
    return [c for t, c in replies if t == 20]


def test_connect_to_publish_exchange() -> None:
    data, _ = publish_prologue("abc123?token=x")
    s = RtmpSession(apps=frozenset({"live"}))
    s.receive_data(data)
    evs = events(s)
    assert isinstance(evs[0], HandshakeDone) and evs[0].digest
    assert isinstance(evs[1], Connect) and evs[1].app == "live"
    assert evs[1].tc_url == "rtmp://127.0.0.1/live"
    assert evs[2] == Publish("abc123", "live", "abc123?token=x", "live", 1)
    assert s.state is State.PUBLISH_PENDING

    peer = Peer()
    replies = peer.replies(s.data_to_send())
    kinds = [t for t, _ in replies]
    assert kinds[:3] == [5, 6, 1]  # window ack size, set peer bandwidth, set chunk size
    assert replies[0][1] == 2_500_000 and replies[2][1] == 4096
    cmds = commands(replies)
    connect = cmds[0]
    assert connect.name == "_result" and connect.transaction_id == 1.0
    assert connect.command_object == {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
    assert connect.args[0]["code"] == "NetConnection.Connect.Success"
    assert connect.args[0]["objectEncoding"] == 0.0
    assert [(c.name, c.transaction_id) for c in cmds[1:]] == [
        ("_result", 2.0),
        ("onFCPublish", 0.0),
        ("_result", 3.0),
        ("_result", 4.0),
    ]
    assert cmds[2].args[0]["code"] == "NetStream.Publish.Start"
    assert cmds[4].args == (1.0,)  # createStream → stream id 1

    s.accept_publish()
    replies = peer.replies(s.data_to_send())
    assert replies[0][0] == 4 and replies[0][1].event == 0 and replies[0][1].value == 1
    status = commands(replies)[0]
    assert status.name == "onStatus"
    assert status.args[0]["code"] == "NetStream.Publish.Start"
    assert s.state is State.PUBLISHING


def test_media_and_metadata_events_after_accept() -> None:
    data, c = publish_prologue()
    s = RtmpSession()
    s.receive_data(data)
    events(s)
    s.accept_publish()
    metadata(c)
    c.video(0, video_config_tag())
    c.audio(0, audio_config_tag())
    c.video(0, video_frame_tag(True))
    c.audio(21, audio_frame_tag())
    s.receive_data(c.take())
    evs = events(s)
    assert isinstance(evs[0], MetaData) and evs[0].values["width"] == 640.0
    assert [type(e) for e in evs[1:]] == [VideoData, AudioData, VideoData, AudioData]
    assert evs[4].timestamp == 21


def test_media_sent_before_the_answer_waits_for_the_decision() -> None:
    data, c = publish_prologue()
    c.video(0, video_config_tag())
    c.video(0, video_frame_tag(True))
    s = RtmpSession()
    s.receive_data(data + c.take())
    assert [type(e) for e in events(s)] == [HandshakeDone, Connect, Publish]
    s.accept_publish()
    assert [type(e) for e in events(s)] == [VideoData, VideoData]


@pytest.mark.parametrize("code", ["NetStream.Publish.BadName", "NetStream.Publish.Rejected"])
def test_reject_sends_error_status_and_closes(code: str) -> None:
    data, c = publish_prologue("nope")
    c.video(0, video_config_tag())
    s = RtmpSession()
    s.receive_data(data + c.take())
    events(s)
    peer = Peer()
    peer.replies(s.data_to_send())
    s.reject_publish(code, "unknown stream key")
    status = commands(peer.replies(s.data_to_send()))[-1]
    assert status.name == "onStatus"
    assert status.args[0]["level"] == "error" and status.args[0]["code"] == code
    assert code in status.args[0]["description"]
    assert s.closed
    assert [type(e) for e in events(s)] == [Closed]
    s.receive_data(b"more")  # ignored once closed
    assert events(s) == []


def test_unknown_app_is_rejected_at_connect() -> None:
    data, _ = publish_prologue(app="vod")
    s = RtmpSession(apps=frozenset({"live"}))
    s.receive_data(data)
    assert [type(e) for e in events(s)] == [HandshakeDone, Closed]
    err = commands(Peer().replies(s.data_to_send()))[0]
    assert err.name == "_error" and err.args[0]["code"] == "NetConnection.Connect.Rejected"


def test_play_is_refused_with_a_clear_status() -> None:
    w = ClientWriter(4096)
    w.command("connect", obj={"app": "live", "tcUrl": "rtmp://h/live"})
    w.command("createStream")
    w.command("play", "somekey", stream_id=1)
    s = RtmpSession()
    s.receive_data(handshake_bytes() + w.take())
    assert isinstance(events(s)[-1], Closed)
    status = commands(Peer().replies(s.data_to_send()))[-1]
    assert status.args[0]["code"] == "NetStream.Play.Failed"
    assert "only accepts publishing" in status.args[0]["description"]


def test_unpublish_commands_end_publishing() -> None:
    data, c = publish_prologue()
    s = RtmpSession()
    s.receive_data(data)
    events(s)
    s.accept_publish()
    c.command("FCUnpublish", "good")
    c.command("deleteStream", 1.0)
    s.receive_data(c.take())
    assert events(s) == [Unpublish("FCUnpublish")]
    assert s.state is State.CONNECTED
    s.receive_data(b"")
    assert [type(e) for e in events(s)] == [Closed]


def test_ping_request_gets_a_ping_response() -> None:
    data, c = publish_prologue()
    s = RtmpSession()
    s.receive_data(data)
    s.accept_publish()
    peer = Peer()
    peer.replies(s.data_to_send())
    c.out += c.w.write(2, 4, 0, 0, bytes(UserControl(6, 123456)))
    s.receive_data(c.take())
    (reply,) = peer.replies(s.data_to_send())
    assert reply[1] == UserControl(7, 123456)


def test_acknowledgement_every_window() -> None:
    data, c = publish_prologue()
    c.out += c.w.write(2, 5, 0, 0, (5000).to_bytes(4, "big"))  # client's window: 5000 bytes
    s = RtmpSession()
    s.receive_data(data + c.take())
    events(s)
    s.accept_publish()
    peer = Peer()
    peer.replies(s.data_to_send())
    c.video(0, video_config_tag())
    for i in range(10):
        c.video(i * 33, video_frame_tag(i == 0, nal=b"\x41" + bytes(1000)))
    s.receive_data(c.take())
    acks = [v for t, v in peer.replies(s.data_to_send()) if t == 3]
    assert acks == [s.bytes_received]


def test_commands_before_connect_are_a_protocol_error() -> None:
    w = ClientWriter()
    w.command("publish", "key", "live")
    with pytest.raises(ProtocolError):
        RtmpSession().receive_data(handshake_bytes() + w.take())


def test_oversized_command_is_refused() -> None:
    w = ClientWriter(65536)
    w.command("connect", obj={"app": "live", "junk": "x" * 70000})
    with pytest.raises(ProtocolError):
        RtmpSession().receive_data(handshake_bytes() + w.take())


@pytest.mark.parametrize(
    "capture", [FFMPEG_CAPTURE, GSTREAMER_CAPTURE], ids=["ffmpeg", "gstreamer"]
)
def test_captured_publish_sessions_replay(capture: Any) -> None:
    data = capture.read_bytes()
    s = RtmpSession(apps=frozenset({"live"}))
    evs: list[Any] = []
    for i in range(0, len(data), 1000):
        s.receive_data(data[i : i + 1000])
        evs += events(s)
        if s.state is State.PUBLISH_PENDING:
            s.accept_publish()
    s.receive_data(b"")
    evs += events(s)
    kinds = [type(e) for e in evs]
    assert kinds[:4] == [HandshakeDone, Connect, Publish, MetaData]
    assert evs[2].stream_key == "good"
    assert kinds.count(VideoData) >= 15 and kinds.count(AudioData) >= 20
    assert kinds[-1] is Closed
    assert s.buffered_bytes == 0


def test_aggregate_messages_are_split_into_tags() -> None:
    data, c = publish_prologue()
    s = RtmpSession()
    s.receive_data(data)
    events(s)
    s.accept_publish()

    def tag(kind: int, ts: int, body: bytes) -> bytes:
        head = bytes((kind,)) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
        head += bytes((ts >> 24,)) + b"\x00\x00\x00"
        return head + body + (11 + len(body)).to_bytes(4, "big")

    agg = tag(9, 500, video_config_tag()) + tag(8, 520, audio_frame_tag())
    c.out += c.w.write(6, 22, 1, 1000, agg)
    s.receive_data(c.take())
    evs = events(s)
    assert [(type(e), e.timestamp) for e in evs] == [(VideoData, 1000), (AudioData, 1020)]
