"""A multipart body read as it arrives, for uploads too large to hold (`POST /v1/files`): text
fields are collected, each bounded, and the file part's bytes are handed on a chunk at a time, to
a blob store upload running in a thread (`BlobWriter`). Nothing is spooled to memory or to the
API's disk, and the caller can stop at any chunk, before the rest of the body is read.

The other routes read their (image-sized) bodies whole through api/bodies.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import dataclass

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.lowlevel import current_token
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from api.errors import bad_request
from storage.blobs import BlobStore

MAX_FIELD_BYTES = 1024
MAX_FIELDS = 16
# Uploads storing at once; one more waits for a thread, and its request is read no faster.
UPLOAD_THREADS = anyio.CapacityLimiter(16)


@dataclass(frozen=True)
class TextField:
    name: str
    value: str


@dataclass(frozen=True)
class FileStart:
    name: str
    filename: str
    content_type: str | None


@dataclass(frozen=True)
class FileChunk:
    data: bytes


@dataclass(frozen=True)
class FileEnd:
    pass


Part = TextField | FileStart | FileChunk | FileEnd


def _text(value: bytes | bytearray) -> str:
    return bytes(value).decode("utf-8", errors="replace")


class _PartCollector:
    """python-multipart's callbacks, collected as `Part`s to hand out after each write."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self._header = [b"", b""]
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._field: bytearray | None = None  # the text field being read; None in a file part
        self._fields = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._headers.clear,
            "on_header_field": lambda data, start, end: self._add_to_header(0, data[start:end]),
            "on_header_value": lambda data, start, end: self._add_to_header(1, data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
        }

    def _add_to_header(self, index: int, data: bytes) -> None:
        self._header[index] += data

    def _header_end(self) -> None:
        name, value = self._header
        self._headers[name.lower()] = value
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise bad_request(
                "A multipart part has no name in its Content-Disposition.", param=None, code="invalid_multipart"
            )
        self._name = _text(options[b"name"])
        if b"filename" in options:
            self._field = None
            content_type = self._headers.get(b"content-type")
            declared = _text(content_type) if content_type else None
            self.parts.append(FileStart(self._name, _text(options[b"filename"]), declared))
            return
        self._fields += 1
        if self._fields > MAX_FIELDS:
            raise bad_request(f"The form has more than {MAX_FIELDS} fields.", param=None, code="invalid_multipart")
        self._field = bytearray()

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._field is None:
            self.parts.append(FileChunk(data[start:end]))
            return
        self._field += data[start:end]
        if len(self._field) > MAX_FIELD_BYTES:
            raise bad_request(f"The field '{self._name}' is over {MAX_FIELD_BYTES} bytes.", param=self._name)

    def _part_end(self) -> None:
        self.parts.append(FileEnd() if self._field is None else TextField(self._name, _text(self._field)))

    def take(self) -> list[Part]:
        parts, self.parts = self.parts, []
        return parts


async def multipart_parts(request: Request) -> AsyncIterator[Part]:
    """The body's parts in order, a file part as `FileStart`, its `FileChunk`s, `FileEnd`."""
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    if media_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise bad_request(
            "Send the file as multipart/form-data, with the fields 'file' and 'purpose'.",
            param=None,
            code="unsupported_content_type",
        )
    collector = _PartCollector()
    parser = MultipartParser(options[b"boundary"], collector.callbacks())
    try:
        async for chunk in request.stream():
            _feed(parser, chunk)
            for part in collector.take():
                yield part
    except ClientDisconnect:
        raise bad_request(
            "The client went away before the upload ended.", param="file", code="upload_incomplete"
        ) from None
    _feed(parser, None)
    for part in collector.take():
        yield part


def _feed(parser: MultipartParser, chunk: bytes | None) -> None:
    """One chunk into the parser (None: the body ended)."""
    try:
        if chunk is None:
            parser.finalize()
        else:
            parser.write(chunk)
    except FormParserError:
        raise bad_request("The multipart body is malformed.", param=None, code="invalid_multipart") from None


class UploadAborted(Exception):
    """The request was refused mid-upload: what was written must not be stored."""


class BlobWriter:
    """A blob stored by a thread from the chunks this coroutine hands it as they arrive, through a
    small bounded buffer: a slow store slows the reading of the request, it never grows memory.
    `finish` stores it; `abort`, or a store that fails, leaves nothing under the key."""

    BUFFERED_CHUNKS = 16

    def __init__(self, blobs: BlobStore, key: str, content_type: str) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[bytes](self.BUFFERED_CHUNKS)
        self._token = current_token()  # boto3 reads the chunks from threads of its own
        self._aborted = False
        self._upload = asyncio.ensure_future(
            anyio.to_thread.run_sync(self._store, blobs, key, content_type, limiter=UPLOAD_THREADS)
        )

    def _chunks(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = anyio.from_thread.run(self._receive.receive, token=self._token)
            except anyio.EndOfStream:
                if self._aborted:
                    raise UploadAborted from None
                return
            yield chunk

    def _store(self, blobs: BlobStore, key: str, content_type: str) -> int:
        try:
            return blobs.put_stream(key, self._chunks(), content_type)
        finally:
            # A write waiting on a full buffer learns at once that nothing reads it any more.
            anyio.from_thread.run_sync(self._receive.close, token=self._token)

    async def write(self, data: bytes) -> None:
        try:
            await self._send.send(data)
        except anyio.BrokenResourceError:
            await self._upload  # the store stopped reading because it failed: raise its error
            raise

    async def finish(self) -> int:
        """The whole blob is handed over: wait until it is stored; its size."""
        self._send.close()
        return await self._upload

    async def abort(self) -> None:
        self._aborted = True
        self._send.close()  # before any await: the thread ends even if this coroutine is cancelled
        with suppress(Exception):
            await self._upload
