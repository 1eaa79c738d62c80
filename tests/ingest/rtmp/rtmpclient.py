"""Test helper: builds the bytes an RTMP publisher sends (handshake, commands, FLV tags).

Only for constructing protocol test input; the real-client tests use ffmpeg/GStreamer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ingest.rtmp import amf0
from ingest.rtmp.chunk import ChunkWriter
from ingest.rtmp.handshake import HANDSHAKE_SIZE, client_hello
from ingest.rtmp.messages import Command, Data, SetChunkSize

DATA = Path(__file__).resolve().parent.parent / "data"
FFMPEG_CAPTURE = DATA / "ffmpeg_publish.bin"
"""Client→server bytes of Debian ffmpeg 5.1 publishing 1 s of 160x90 H.264 + AAC
(digest handshake)."""
GSTREAMER_CAPTURE = DATA / "gstreamer_publish.bin"
"""Client→server bytes of GStreamer rtmp2sink publishing 176x144 H.264 4:4:4 + AAC
(simple handshake)."""

AVCC_1080P = bytes.fromhex(
    "01640028ffe1001b67640028acd940780227e5c044000003000400000300f03c60c65801000468ef8fcbfdf8f800"
)
AVCC_360P = bytes.fromhex(
    "0164001effe1001a6764001eacd940a02ff970110000030001000003003c0f162d9601000468ef8fcbfdf8f800"
)
AVCC_720P = bytes.fromhex(
    "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000468ef8fcbfdf8f800"
)
AVCC_480P_BASELINE = bytes.fromhex(
    "0142c01fffe100196742c01fda0360f79bc044000003000400000300f03c60ca8001000468ce0fc8"
)
ASC_AAC_LC_48K_STEREO = bytes.fromhex("1190")
ASC_AAC_LC_44K_MONO = bytes.fromhex("1208")


def video_config_tag(avcc: bytes = AVCC_360P) -> bytes:
    return bytes((0x17, 0, 0, 0, 0)) + avcc


def video_frame_tag(keyframe: bool, cts_ms: int = 0, nal: bytes = b"\x65\x88\x84\x00") -> bytes:
    head = 0x17 if keyframe else 0x27
    cts = (cts_ms & 0xFFFFFF).to_bytes(3, "big")
    return bytes((head, 1)) + cts + len(nal).to_bytes(4, "big") + nal


def audio_config_tag(asc: bytes = ASC_AAC_LC_48K_STEREO) -> bytes:
    return bytes((0xAF, 0)) + asc


def audio_frame_tag(frame: bytes = b"\x21\x10\x04\x60\x8c\x1c") -> bytes:
    return bytes((0xAF, 1)) + frame


class ClientWriter:
    """Chunked client messages, with the client's own chunk size."""

    def __init__(self, chunk_size: int = 128) -> None:
        self.w = ChunkWriter(128)
        self.out = bytearray()
        if chunk_size != 128:
            self.out += self.w.write(2, 1, 0, 0, bytes(SetChunkSize(chunk_size)))
            self.w.chunk_size = chunk_size
        self.tid = 0.0

    def command(self, name: str, *args: Any, obj: Any = None, stream_id: int = 0) -> None:
        self.tid += 1
        cmd = Command(name, self.tid, obj, args)
        self.out += self.w.write(3 if stream_id == 0 else 8, 20, stream_id, 0, bytes(cmd))

    def data(self, *values: Any, stream_id: int = 1) -> None:
        self.out += self.w.write(4, 18, stream_id, 0, bytes(Data(values)))

    def video(self, ts: int, payload: bytes, stream_id: int = 1) -> None:
        self.out += self.w.write(6, 9, stream_id, ts, payload)

    def audio(self, ts: int, payload: bytes, stream_id: int = 1) -> None:
        self.out += self.w.write(4, 8, stream_id, ts, payload)

    def take(self) -> bytes:
        b = bytes(self.out)
        self.out.clear()
        return b


def handshake_bytes(digest: bool = True, scheme: int = 0) -> bytes:
    return client_hello(digest=digest, scheme=scheme) + os.urandom(HANDSHAKE_SIZE)


def publish_prologue(
    key: str = "good", app: str = "live", *, chunk_size: int = 4096, digest: bool = True
) -> tuple[bytes, ClientWriter]:
    """Handshake + connect/releaseStream/FCPublish/createStream/publish, as ffmpeg sends."""
    c = ClientWriter(chunk_size)
    c.command(
        "connect",
        obj={
            "app": app,
            "type": "nonprivate",
            "flashVer": "FMLE/3.0 (compatible; test)",
            "tcUrl": f"rtmp://127.0.0.1/{app}",
        },
    )
    c.command("releaseStream", key)
    c.command("FCPublish", key)
    c.command("createStream")
    c.command("publish", key, "live", stream_id=1)
    return handshake_bytes(digest) + c.take(), c


def metadata(c: ClientWriter, *, video: bool = True, audio: bool = True) -> None:
    meta = amf0.EcmaArray()
    if video:
        meta.update(width=640.0, height=360.0, videocodecid=7.0, videodatarate=800.0)
    if audio:
        meta.update(audiocodecid=10.0, audiosamplerate=48000.0, audiodatarate=128.0)
    c.data("@setDataFrame", "onMetaData", meta)
