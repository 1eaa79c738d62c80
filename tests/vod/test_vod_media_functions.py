"""The pool-side media functions on local files: probe, thumbnails, codecs strings."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from tests.vod.conftest import ffmpeg
from vod.media import avcc_parameter_sets
from vod.probe import codec_string, fragment_timing, init_codecs, probe_file
from vod.thumbnails import extract_thumbnail


@pytest.fixture(scope="module")
def hd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hd") / "hd.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=2",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", str(path),
    )  # fmt: skip
    return path


def test_probe_describes_a_video(hd: Path) -> None:
    p = probe_file(hd)
    assert p.ok and p.video_codec == "h264" and p.audio_codec is None
    assert (p.width, p.height) == (1280, 720) and abs(p.duration_s - 2.0) < 0.1
    assert p.remuxable


def test_probe_refuses_text_audio_and_images(tmp_path: Path) -> None:
    text = tmp_path / "x.txt"
    text.write_text("hello")
    assert probe_file(text).error is not None
    assert "not a media file" in (probe_file(text).error or "")
    wav = tmp_path / "x.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", str(wav))
    assert probe_file(wav).error == "no video track in the file"
    png = tmp_path / "x.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "1", str(png))
    assert probe_file(png).error == "a still image, not a video"
    assert probe_file(tmp_path / "missing.mp4").error is not None


def test_thumbnail_is_scaled_to_640_wide(hd: Path, tmp_path: Path) -> None:
    info = extract_thumbnail(str(hd), 1.0, str(tmp_path / "t.jpg"))
    assert (info["width"], info["height"]) == (640, 360) and abs(info["time_s"] - 1.0) < 0.05
    data = (tmp_path / "t.jpg").read_bytes()
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    with av.open(str(tmp_path / "t.jpg")) as c:
        frame = next(c.decode(video=0))
    assert (frame.width, frame.height) == (640, 360)


def test_thumbnail_of_a_file_without_video_fails(tmp_path: Path) -> None:
    wav = tmp_path / "x.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", str(wav))
    with pytest.raises(ValueError):
        extract_thumbnail(str(wav), 0, str(tmp_path / "t.jpg"))


def test_codecs_and_fragment_timing_of_real_cmaf(hls_a: Path) -> None:
    init = (hls_a / "init.mp4").read_bytes()
    assert init_codecs(init).startswith("avc1.") and init_codecs(init).endswith(",mp4a.40.2")
    start, duration = fragment_timing(init, (hls_a / "seg001.m4s").read_bytes())
    assert abs(duration - 1.0) < 0.01 and abs(start - 1.0) < 0.1


def test_codec_strings() -> None:
    assert codec_string("h264", bytes([1, 0x64, 0x00, 0x1F, 0xFF])) == "avc1.64001f"
    assert codec_string("aac", bytes([0x11, 0x90])) == "mp4a.40.2"
    assert codec_string("opus", None) == "opus"


def test_avcc_parameter_sets_are_length_prefixed() -> None:
    sps, pps = b"\x67\x64\x00\x1f\xac", b"\x68\xee\x3c\x80"
    avcc = bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1]) + len(sps).to_bytes(2, "big") + sps
    avcc += bytes([1]) + len(pps).to_bytes(2, "big") + pps
    assert avcc_parameter_sets(avcc) == b"\0\0\0\x05" + sps + b"\0\0\0\x04" + pps
    assert avcc_parameter_sets(b"\x00junk") == b""


def test_chained_files_read_and_seek_like_one_file(tmp_path: Path) -> None:
    import io

    from vod.inputs import ChainedFiles

    parts = [b"abc", b"", b"defgh", b"ij"]
    paths = []
    for i, data in enumerate(parts):
        p = tmp_path / f"p{i}"
        p.write_bytes(data)
        paths.append(str(p))
    whole = b"".join(parts)
    with ChainedFiles(paths) as f:
        assert f.read() == whole
        f.seek(2)
        assert f.read(4) == whole[2:6]
        f.seek(-3, io.SEEK_END)
        assert f.read() == whole[-3:]
        assert f.read(5) == b""


def test_inputs_open_only_media_demuxers_and_local_files(tmp_path: Path) -> None:
    from vod.inputs import open_input
    from vod.probe import probe_file

    playlist = tmp_path / "x.txt"  # no telling extension: the content decides
    playlist.write_text("#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/a.ts\n#EXT-X-ENDLIST\n")
    result = probe_file(playlist)
    assert not result.ok and "HLS playlist" in (result.error or "")
    concat = tmp_path / "y.bin"
    concat.write_text("  ffconcat version 1.0\nfile 'http://127.0.0.1:9/a.mp4'\n")
    assert "concat" in (probe_file(concat).error or "")
    # the demuxer allowlist holds even when the content sniffing does not see it
    hidden = tmp_path / "z.bin"
    hidden.write_text("\n" * 100 + "#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/a.ts\n")
    with pytest.raises(av.error.FFmpegError):
        open_input(str(hidden)).close()
