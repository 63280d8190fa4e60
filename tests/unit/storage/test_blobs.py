"""One contract, run against every blob store: the local directory and S3 (a real S3-compatible
server process over HTTP)."""

from __future__ import annotations

import boto3
import httpx
import pytest

from bench.processes import make_bucket
from darkroom.settings import Settings
from storage.blobs import STREAM_PART_SIZE, BlobNotFound, LocalBlobStore, S3BlobStore, make_blob_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    endpoint = request.getfixturevalue("s3_endpoint")
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    return S3BlobStore(client, make_bucket(endpoint), prefix="pre/")


def test_put_get_head_round_trip(store):
    store.put("outputs/job_1/0.png", b"\x89PNG data", "image/png")
    assert store.get("outputs/job_1/0.png") == b"\x89PNG data"
    info = store.head("outputs/job_1/0.png")
    assert (info.size, info.content_type) == (9, "image/png")


def test_put_overwrites(store):
    store.put("a/b", b"one", "text/plain")
    store.put("a/b", b"two!", "application/octet-stream")
    assert store.get("a/b") == b"two!"
    assert store.head("a/b").content_type == "application/octet-stream"


def _chunks(total: int, chunk_size: int = 1024 * 1024):
    """`total` bytes of a repeating pattern, in chunks, as a request body arrives."""
    pattern = bytes(range(251))  # a prime length: chunks and parts do not line up with it
    for start in range(0, total, chunk_size):
        size = min(chunk_size, total - start)
        yield (pattern * (size // len(pattern) + 2))[start % len(pattern) :][:size]


# Empty, one small write, and (on S3) a multipart upload of two and a half parts.
@pytest.mark.parametrize("total", [0, 1000, STREAM_PART_SIZE * 5 // 2])
def test_put_stream_stores_what_the_chunks_yield(store, total):
    expected = b"".join(_chunks(total))
    assert store.put_stream("files/f1", _chunks(total), "application/jsonl") == total
    assert store.get("files/f1") == expected
    assert (store.head("files/f1").size, store.head("files/f1").content_type) == (total, "application/jsonl")


def test_a_stream_that_raises_stores_nothing_and_keeps_what_was_there(store):
    store.put("files/f1", b"the old bytes", "text/plain")

    def failing():
        yield from _chunks(STREAM_PART_SIZE * 2)  # on S3: a multipart upload under way
        raise OSError("the client went away")

    with pytest.raises(OSError, match="went away"):
        store.put_stream("files/f1", failing(), "application/jsonl")
    with pytest.raises(RuntimeError, match="over the cap"):
        store.put_stream("files/f2", _raising_after_one_chunk(), "application/jsonl")
    assert store.get("files/f1") == b"the old bytes"
    with pytest.raises(BlobNotFound):
        store.head("files/f2")
    if isinstance(store, S3BlobStore):
        assert "Uploads" not in store.client.list_multipart_uploads(Bucket=store.bucket)  # no part left behind
    else:
        assert sorted(path.name for path in (store.root / "files").iterdir()) == ["f1", "f1.content-type"]


def _raising_after_one_chunk():
    yield b"x" * 1000
    raise RuntimeError("over the cap")


def test_iter_chunks_streams_whole_blob(store):
    data = bytes(range(256)) * 5000
    store.put("big/blob", data, "application/octet-stream")
    chunks = list(store.iter_chunks("big/blob", chunk_size=100_000))
    assert len(chunks) > 1
    assert b"".join(chunks) == data


@pytest.mark.parametrize(
    "start,end",
    [(0, None), (0, 1), (1, 2), (99_999, 100_001), (500_000, None), (1_279_999, None), (0, 1_280_000), (7, 7)],
)
def test_iter_chunks_reads_a_byte_range_like_a_slice(store, start, end):
    data = bytes(range(256)) * 5000  # 1,280,000 bytes
    store.put("big/blob", data, "application/octet-stream")
    chunks = list(store.iter_chunks("big/blob", chunk_size=100_000, start=start, end=end))
    assert b"".join(chunks) == data[start:end]
    assert all(len(chunk) <= 100_000 for chunk in chunks)


def test_local_ranged_read_seeks_and_reads_no_further(tmp_path):
    store = LocalBlobStore(tmp_path)
    store.put("a/b", b"0123456789", "text/plain")
    chunks = store.iter_chunks("a/b", chunk_size=3, start=2, end=9)
    assert list(chunks) == [b"234", b"567", b"8"]


def test_head_gives_an_etag_that_changes_with_the_bytes(store):
    store.put("e/tag", b"one", "text/plain")
    first = store.head("e/tag").etag
    assert first and first.startswith('"') and first.endswith('"')
    assert store.head("e/tag").etag == first
    store.put("e/tag", b"other", "text/plain")
    assert store.head("e/tag").etag != first


@pytest.mark.parametrize("operation", ["get", "head", "iter_chunks"])
def test_missing_key_raises_blob_not_found(store, operation):
    with pytest.raises(BlobNotFound):
        result = getattr(store, operation)("nope/missing")
        list(result) if operation == "iter_chunks" else None


@pytest.mark.parametrize("start,end", [(5, None), (0, 10), (3, 3)])
def test_a_ranged_read_of_a_missing_key_raises_blob_not_found(store, start, end):
    with pytest.raises(BlobNotFound):
        list(store.iter_chunks("nope/missing", start=start, end=end))


def test_only_s3_presigns_urls(tmp_path, s3_endpoint):
    assert LocalBlobStore(tmp_path).presigned_url("a/b", 60) is None
    settings = Settings(
        data_dir=tmp_path,
        s3_bucket=make_bucket(s3_endpoint),
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="t",
        s3_secret_access_key="t",
        s3_prefix="pre/",
    )
    store = make_blob_store(settings)
    store.put("outputs/v.mp4", b"video bytes", "video/mp4")
    url = store.presigned_url("outputs/v.mp4", 60)
    assert url.startswith(f"{s3_endpoint}/{settings.s3_bucket}/pre/outputs/v.mp4?")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=60" in url
    response = httpx.get(url)
    assert (response.status_code, response.content) == (200, b"video bytes")


def test_presigned_urls_name_the_public_endpoint(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        s3_bucket="bucket",
        s3_endpoint_url="http://minio:9000",
        s3_public_endpoint_url="https://media.example.com",
        s3_access_key_id="t",
        s3_secret_access_key="t",
    )
    assert make_blob_store(settings).presigned_url("a/b", 60).startswith("https://media.example.com/bucket/a/b?")


def test_delete_is_idempotent(store):
    store.put("x/y", b"1", "text/plain")
    store.delete("x/y")
    store.delete("x/y")
    with pytest.raises(BlobNotFound):
        store.get("x/y")


def test_delete_prefix_removes_only_that_prefix(store):
    for key in ("outputs/job_1/0.png", "outputs/job_1/1.png", "outputs/job_10/0.png", "inputs/job_1/0"):
        store.put(key, b"d", "image/png")
    store.delete_prefix("outputs/job_1")
    for key in ("outputs/job_1/0.png", "outputs/job_1/1.png"):
        with pytest.raises(BlobNotFound):
            store.get(key)
    assert store.get("outputs/job_10/0.png") == b"d"
    assert store.get("inputs/job_1/0") == b"d"
    store.delete_prefix("never/written")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_unsafe_keys_are_refused(store, key):
    with pytest.raises(ValueError):
        store.put(key, b"d", "text/plain")


def test_check_passes_on_a_reachable_store(store):
    store.check()


def test_s3_check_fails_for_a_missing_bucket(s3_endpoint):
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    with pytest.raises(Exception):
        S3BlobStore(client, "no-such-bucket").check()
