"""Blob storage behind one small interface, with S3 and local-directory implementations.

Both raise `BlobNotFound` for a missing key and raise (never return None) on a failed write, so a
job can never be marked completed without its output. `tests/unit/storage/test_blobs.py` runs one
contract suite against both.

Reads stream: `iter_chunks` yields a blob, or a byte range of it, a chunk at a time (S3 with a
`Range` GET, a file with a seek), so serving a large video never holds it whole in memory. So can
writes: `put_stream` stores chunks as an iterator yields them (S3 through boto3's managed multipart
upload, a file written then renamed), and stores nothing if the iterator raises.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHUNK_SIZE = 1024 * 1024
# A streamed S3 upload holds at most this many parts of this size in memory (S3's parts are 5 MiB
# at least): about 32 MiB per upload, however large the blob.
STREAM_PART_SIZE = 8 * 1024 * 1024
STREAM_PARTS_IN_MEMORY = 2


class BlobNotFound(KeyError):
    pass


@dataclass(frozen=True)
class BlobInfo:
    size: int
    content_type: str
    # A strong validator for HTTP (quoted): changes whenever the bytes do. S3's own ETag; for a
    # file, its mtime and size (a rewrite is a rename, so the mtime changes).
    etag: str | None = None


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...
    # The bytes `chunks` yields, stored as they come, never held whole; their total size. If the
    # iterator raises, the error propagates and nothing is stored under `key`.
    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> int: ...
    def get(self, key: str) -> bytes: ...
    def head(self, key: str) -> BlobInfo: ...
    # Bytes [start, end) of the blob, as in slicing; end=None reads to the end. Callers pass a
    # range inside the blob (api/ranges.py checks it against `head`).
    def iter_chunks(
        self, key: str, chunk_size: int = CHUNK_SIZE, *, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]: ...
    # A time-limited URL anyone can GET the blob from, or None where the store has no such thing.
    def presigned_url(self, key: str, expires_in_s: int) -> str | None: ...
    def delete(self, key: str) -> None: ...  # missing keys are not an error
    def delete_prefix(self, prefix: str) -> None: ...
    def check(self) -> None: ...  # raises if the store cannot be reached


def _validate_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class LocalBlobStore:
    """Files under a directory; the content type is kept in a sidecar file next to each blob."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _validate_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)
        path.with_name(path.name + ".content-type").write_text(content_type)

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            try:
                for chunk in chunks:
                    handle.write(chunk)
                    size += len(chunk)
            except BaseException:
                handle.close()
                os.unlink(handle.name)
                raise
        os.replace(handle.name, path)
        path.with_name(path.name + ".content-type").write_text(content_type)
        return size

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def head(self, key: str) -> BlobInfo:
        path = self._path(key)
        try:
            stat = path.stat()
            content_type = path.with_name(path.name + ".content-type").read_text()
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        return BlobInfo(size=stat.st_size, content_type=content_type, etag=etag)

    def iter_chunks(
        self, key: str, chunk_size: int = CHUNK_SIZE, *, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        handle.seek(start)
        return _read_chunks(handle, chunk_size, None if end is None else max(0, end - start))

    def presigned_url(self, key: str, expires_in_s: int) -> str | None:
        return None

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".content-type").unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise OSError(f"blob directory {self.root} is not writable")


def _read_chunks(handle, chunk_size: int, remaining: int | None) -> Iterator[bytes]:
    with handle:
        while remaining is None or remaining > 0:
            chunk = handle.read(chunk_size if remaining is None else min(chunk_size, remaining))
            if not chunk:
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk


class S3BlobStore:
    """Any S3-compatible endpoint (AWS, MinIO, moto...) through boto3."""

    def __init__(self, client, bucket: str, prefix: str = "", *, presign_client=None) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        # Signs URLs for the endpoint clients reach, which may not be the one this server uses.
        self.presign_client = presign_client or client

    def _key(self, key: str) -> str:
        return self.prefix + _validate_key(key)

    @contextmanager
    def _missing_as_not_found(self, key: str) -> Iterator[None]:
        from botocore.exceptions import ClientError

        try:
            yield
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise BlobNotFound(key) from None
            raise

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
        )

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> int:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=STREAM_PART_SIZE,
            multipart_chunksize=STREAM_PART_SIZE,
            max_concurrency=STREAM_PARTS_IN_MEMORY,
            preferred_transfer_client="classic",
        )
        config.max_in_memory_upload_chunks = STREAM_PARTS_IN_MEMORY
        reader = _ChunkReader(chunks)
        # A reader that raises makes the transfer abort its multipart upload: no part is kept.
        self.client.upload_fileobj(
            reader, self.bucket, self._key(key), ExtraArgs={"ContentType": content_type}, Config=config
        )
        return reader.size

    def get(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    def head(self, key: str) -> BlobInfo:
        with self._missing_as_not_found(key):
            response = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return BlobInfo(
            size=response["ContentLength"], content_type=response["ContentType"], etag=response.get("ETag")
        )

    def iter_chunks(
        self, key: str, chunk_size: int = CHUNK_SIZE, *, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        if end is not None and end <= start:
            # A Range header cannot ask for zero bytes; a missing key is still BlobNotFound.
            self.head(key)
            return iter(())
        extra = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with self._missing_as_not_found(key):
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
        return _body_chunks(response["Body"], chunk_size)

    def presigned_url(self, key: str, expires_in_s: int) -> str | None:
        # Signed locally with the credentials: no request to S3.
        return self.presign_client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires_in_s
        )

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        full_prefix = self.prefix + _validate_key(prefix.rstrip("/")) + "/"
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


class _ChunkReader:
    """The file-like `read` boto3's upload asks for, over an iterator of chunks. Not seekable on
    purpose: boto3 then reads it once, part by part, instead of looking for its size first."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = bytearray()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
            self.size += len(chunk)
        taken = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        with memoryview(self._buffer) as view:
            data = bytes(view[:taken])  # one copy of the part, not two
        del self._buffer[:taken]
        return data


def _body_chunks(body, chunk_size: int) -> Iterator[bytes]:
    # A client that stops reading (a player seeking) drops this iterator: close the body then, so
    # its connection goes back to the pool or is shut, instead of waiting for the collector.
    try:
        yield from body.iter_chunks(chunk_size)
    finally:
        body.close()


def make_blob_store(settings) -> BlobStore:
    """S3 when the settings name a bucket, else a directory under the data dir."""
    if not settings.s3_bucket:
        return LocalBlobStore(settings.data_dir / "blobs")
    import boto3
    from botocore.config import Config

    def make_client(endpoint_url: str | None):
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            config=Config(
                # A store that stopped answering should fail fast: the worker retries uploads itself.
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                # boto3 presigns with SigV2 otherwise, which S3 refuses for buckets made since 2020.
                signature_version="s3v4",
            ),
        )

    client = make_client(settings.s3_endpoint_url)
    # A signature covers the host, so URLs handed to clients are signed for the endpoint they reach.
    public = settings.s3_public_endpoint_url
    presign_client = make_client(public) if public and public != settings.s3_endpoint_url else None
    return S3BlobStore(client, settings.s3_bucket, settings.s3_prefix, presign_client=presign_client)
