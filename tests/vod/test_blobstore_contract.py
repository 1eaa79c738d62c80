"""The BlobStore contract: local directory and S3 (real moto server over HTTP) behave alike."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vod.blobstore import BlobNotFound, BlobStore, InvalidKey, LocalBlobStore, validate_key


async def collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


async def test_put_then_get_returns_the_same_bytes(blobs: BlobStore) -> None:
    await blobs.put("a/b/c.bin", b"hello", "application/octet-stream")
    assert await blobs.get("a/b/c.bin") == b"hello"
    assert await blobs.exists("a/b/c.bin")
    assert await blobs.size("a/b/c.bin") == 5


async def test_put_replaces_an_existing_object(blobs: BlobStore) -> None:
    await blobs.put("k.txt", b"one")
    await blobs.put("k.txt", b"two!")
    assert await blobs.get("k.txt") == b"two!"


async def test_missing_objects_raise_blob_not_found(blobs: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await blobs.get("nope/x")
    with pytest.raises(BlobNotFound):
        await blobs.size("nope/x")
    with pytest.raises(BlobNotFound):
        await collect(blobs.open("nope/x"))
    assert not await blobs.exists("nope/x")


async def test_empty_object(blobs: BlobStore) -> None:
    await blobs.put("empty", b"")
    assert await blobs.get("empty") == b""
    assert await blobs.size("empty") == 0


async def test_open_reads_chunks_and_byte_ranges(blobs: BlobStore) -> None:
    data = bytes(range(256)) * 40
    await blobs.put("r.bin", data)
    assert await collect(blobs.open("r.bin", chunk_size=1000)) == data
    assert await collect(blobs.open("r.bin", 100, 2100)) == data[100:2100]
    assert await collect(blobs.open("r.bin", 5000)) == data[5000:]
    assert await collect(blobs.open("r.bin", 10, 10)) == b""


async def test_put_stream_of_many_chunks_larger_than_a_part(blobs: BlobStore) -> None:
    chunk = os.urandom(1024 * 1024)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(11):
            yield bytes([i]) + chunk

    size = await blobs.put_stream("big/obj.bin", chunks(), "video/mp4")
    assert size == 11 * (len(chunk) + 1)
    assert await blobs.size("big/obj.bin") == size
    got = await blobs.get("big/obj.bin")
    assert got[0] == 0 and got[len(chunk) + 1] == 1 and got[-len(chunk) - 1] == 10


async def test_put_stream_that_fails_stores_nothing(blobs: BlobStore) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"x" * (9 * 1024 * 1024)
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        await blobs.put_stream("partial.bin", chunks())
    assert not await blobs.exists("partial.bin")
    assert await blobs.list("") == []


async def test_put_file_and_get_file_round_trip(blobs: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    assert await blobs.put_file("f/src.bin", src) == src.stat().st_size
    dest = tmp_path / "out" / "dest.bin"
    assert await blobs.get_file("f/src.bin", dest) == src.stat().st_size
    assert dest.read_bytes() == src.read_bytes()


async def test_list_is_a_sorted_string_prefix_match(blobs: BlobStore) -> None:
    for key in ["rec/a/1", "rec/a/2", "rec/ab/1", "rec/b/1", "other/1"]:
        await blobs.put(key, b"x")
    assert await blobs.list("rec/a/") == ["rec/a/1", "rec/a/2"]
    assert await blobs.list("rec/a") == ["rec/a/1", "rec/a/2", "rec/ab/1"]
    assert await blobs.list("") == sorted(["rec/a/1", "rec/a/2", "rec/ab/1", "rec/b/1", "other/1"])
    assert await blobs.list("missing/") == []


async def test_delete_and_delete_prefix(blobs: BlobStore) -> None:
    for key in ["d/a/1", "d/a/2", "d/b/1"]:
        await blobs.put(key, b"x")
    await blobs.delete("d/b/1")
    await blobs.delete("d/b/1")  # missing is fine
    assert await blobs.list("d/") == ["d/a/1", "d/a/2"]
    assert await blobs.delete_prefix("d/a/") == 2
    assert await blobs.list("") == []
    with pytest.raises(ValueError):
        await blobs.delete_prefix("")


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "a/./b",
        ".hidden",
        "a\\b",
        "",
        "a b",
        "a/",
        "x" * 600,
        "a/\x00b",
    ],
)
async def test_unsafe_keys_find_nothing(blobs: BlobStore, key: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)
    with pytest.raises(BlobNotFound):
        await blobs.get(key)
    assert not await blobs.exists(key)
    with pytest.raises(InvalidKey):
        await blobs.put(key, b"x")


async def test_url_for_is_presigned_on_s3_and_none_locally(blobs: BlobStore) -> None:
    import urllib.request

    await blobs.put("u/seg.m4s", b"media-bytes", "video/iso.segment")
    url = await blobs.url_for("u/seg.m4s", 60)
    if isinstance(blobs, LocalBlobStore):
        assert url is None
        return
    assert url is not None and "Signature" in url
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: ASYNC210
        assert resp.read() == b"media-bytes"


async def test_local_store_never_leaves_temp_files_visible(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, fsync=False)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / ".seg.m4s.abc.tmp").write_bytes(b"half")
    await store.put("x/seg.m4s", b"whole")
    assert await store.list("x/") == ["x/seg.m4s"]


async def test_put_file_with_move_stores_the_same_bytes(blobs: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "given-up.bin"
    data = os.urandom(100_000)
    src.write_bytes(data)
    assert await blobs.put_file("m/obj.bin", src, move=True) == len(data)
    assert await blobs.get("m/obj.bin") == data


async def test_local_path_only_for_a_local_store(blobs: BlobStore) -> None:
    await blobs.put("lp/x.bin", b"abc")
    path = blobs.local_path("lp/x.bin")
    if isinstance(blobs, LocalBlobStore):
        assert path is not None and path.read_bytes() == b"abc"
    else:
        assert path is None
    with pytest.raises(InvalidKey):
        blobs.local_path("../x")


@pytest.mark.s3
async def test_an_s3_endpoint_that_refuses_connections_is_unavailable_not_missing() -> None:
    import socket

    from vod.blobstore import BlobUnavailable
    from vod.blobstore.s3 import S3BlobStore

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = S3BlobStore(f"http://127.0.0.1:{port}", "gone", "us-east-1", "k", "s")
    try:
        with pytest.raises(BlobUnavailable):
            await store.put("a/b.m4s", b"x")
        with pytest.raises(BlobUnavailable):
            await store.get("a/b.m4s")
        with pytest.raises(BlobUnavailable):
            await store.list("a/")
    finally:
        await store.close()
