"""One contract, run against every blob store: the local directory and S3 (a real S3-compatible
server process over HTTP)."""

from __future__ import annotations

import boto3
import pytest

from storage.blobs import BlobNotFound, LocalBlobStore, S3BlobStore
from tests.processes import make_bucket


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


def test_iter_chunks_streams_whole_blob(store):
    data = bytes(range(256)) * 5000
    store.put("big/blob", data, "application/octet-stream")
    chunks = list(store.iter_chunks("big/blob", chunk_size=100_000))
    assert len(chunks) > 1
    assert b"".join(chunks) == data


@pytest.mark.parametrize("operation", ["get", "head", "iter_chunks"])
def test_missing_key_raises_blob_not_found(store, operation):
    with pytest.raises(BlobNotFound):
        result = getattr(store, operation)("nope/missing")
        list(result) if operation == "iter_chunks" else None


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
