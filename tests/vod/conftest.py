"""Fixtures for vod tests: blob stores (local dir, real moto S3 over HTTP) and real media."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server
from vod.blobstore import BlobStore, LocalBlobStore

_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


def make_s3(server: S3Server, bucket: str | None = None) -> BlobStore:
    from vod.blobstore.s3 import S3BlobStore

    return S3BlobStore(
        server.endpoint_url,
        bucket or f"test-{next(_bucket_ids)}",
        REGION,
        ACCESS_KEY,
        SECRET_KEY,
        create_bucket=True,
    )


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """Each BlobStore implementation, fresh and empty."""
    store: BlobStore
    if request.param == "local":
        store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    else:
        store = make_s3(request.getfixturevalue("s3_server"))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def local_blobs(tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = LocalBlobStore(tmp_path / "blobs", fsync=False)
    yield store
    await store.close()


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        timeout=120,
    )


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


def make_hls(out: Path, seconds: int, *, size: str = "320x180", freq: int = 440) -> Path:
    """Real CMAF: init.mp4 + 1 s .m4s segments (H.264 GOP 30 @ 30 fps, AAC)."""
    out.mkdir(parents=True, exist_ok=True)
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate=30:duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency={freq}:sample_rate=48000:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "30",
        "-keyint_min",
        "30",
        "-sc_threshold",
        "0",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "hls",
        "-hls_segment_type",
        "fmp4",
        "-hls_time",
        "1",
        "-hls_playlist_type",
        "vod",
        "-hls_fmp4_init_filename",
        "init.mp4",
        "-hls_segment_filename",
        str(out / "seg%03d.m4s"),
        str(out / "index.m3u8"),
    )
    return out


@pytest.fixture(scope="session")
def hls_a(media_dir: Path) -> Path:
    return make_hls(media_dir / "a", 6)


@pytest.fixture(scope="session")
def hls_b(media_dir: Path) -> Path:
    """A second publication (reconnect) with a different picture size and tone."""
    return make_hls(media_dir / "b", 4, size="256x144", freq=880)
