"""`POST /v1/files`: the form read as it streams in (api/streamed_upload.py), the file held to its
purpose's caps chunk by chunk on the way to the blob store.

- `purpose` comes before the file part, as the SDK sends it: the caps depend on it, and they are
  applied while the file arrives, not after it has all been read.
- Every file: at most DARKROOM_MAX_FILE_BYTES. A `batch` file: also DARKROOM_MAX_BATCH_FILE_BYTES
  and DARKROOM_MAX_BATCH_FILE_LINES, its lines counted as they pass. A `vision` file is an image:
  held (it is no larger than an image upload may be), checked as an image upload is, then stored.
- Past a cap the answer is a 413 at once, before the rest of the body is read, and nothing stays
  stored; so it is for every other refusal, and for a client that goes away mid-upload.
"""

from __future__ import annotations

import re
from contextlib import aclosing
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.bodies import validate_image
from api.errors import APIError, bad_request, validation_error
from api.streamed_upload import BlobWriter, FileChunk, FileStart, TextField, multipart_parts
from darkroom.settings import Settings
from storage.blobs import BlobStore
from storage.models import FilePurpose

UPLOAD_PURPOSES = (FilePurpose.BATCH, FilePurpose.VISION, FilePurpose.USER_DATA)
BATCH_FILE_LIFETIME = timedelta(days=30)  # OpenAI's default for batch files
# The SDK sends `expires_after={"anchor": ..., "seconds": ...}` as these two form fields.
_EXPIRES_AFTER = {"expires_after[anchor]": "anchor", "expires_after[seconds]": "seconds"}
_MEDIA_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")


class ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: Annotated[int, Field(ge=3600, le=30 * 24 * 3600)]


@dataclass(frozen=True)
class ReceivedFile:
    """A file stored under its blob key, and what its row will say."""

    purpose: FilePurpose
    filename: str
    content_type: str
    size: int
    line_count: int | None  # `batch` files only
    lifetime: timedelta | None  # from creation until it expires; None: kept until deleted


def parse_purpose(value: str) -> FilePurpose:
    if value in UPLOAD_PURPOSES:
        return FilePurpose(value)
    why = "it is written by Darkroom only" if value == FilePurpose.BATCH_OUTPUT else "it is not used here"
    raise bad_request(
        f"Invalid purpose '{value}' ({why}): upload files with purpose 'batch' (a batch's JSONL "
        "requests), 'vision' (an image) or 'user_data'.",
        param="purpose",
    )


@dataclass(frozen=True)
class _Caps:
    max_bytes: int
    bytes_setting: str  # the setting that sets `max_bytes`, named in the 413
    max_lines: int | None = None


def _caps(purpose: FilePurpose, settings: Settings) -> _Caps:
    caps = [(settings.max_file_bytes, "DARKROOM_MAX_FILE_BYTES")]
    if purpose == FilePurpose.BATCH:
        caps.append((settings.max_batch_file_bytes, "DARKROOM_MAX_BATCH_FILE_BYTES"))
    if purpose == FilePurpose.VISION:
        caps.append((settings.max_upload_bytes, "DARKROOM_MAX_UPLOAD_BYTES"))
    max_bytes, setting = min(caps)
    return _Caps(max_bytes, setting, settings.max_batch_file_lines if purpose == FilePurpose.BATCH else None)


class _Counter:
    """The file's bytes and lines so far; a 413 the moment either passes its cap."""

    def __init__(self, caps: _Caps, purpose: FilePurpose) -> None:
        self.caps, self.purpose = caps, purpose
        self.size = self._newlines = 0
        self._last_byte = b"\n"

    @property
    def lines(self) -> int:
        """As JSONL counts them: a last line without its newline counts, a final newline adds none."""
        return self._newlines + (1 if self._last_byte != b"\n" else 0)

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.caps.max_bytes:
            raise APIError(
                413,
                f"The file is over the {self.caps.max_bytes} byte limit for purpose '{self.purpose}' "
                f"({self.caps.bytes_setting}).",
                param="file",
                code="file_too_large",
            )
        if self.caps.max_lines is not None and data:
            self._newlines += data.count(b"\n")
            self._last_byte = data[-1:]
            if self.lines > self.caps.max_lines:
                raise APIError(
                    413,
                    f"The batch file has more than {self.caps.max_lines} lines (DARKROOM_MAX_BATCH_FILE_LINES); "
                    "split it into several batches.",
                    param="file",
                    code="too_many_lines",
                )


class _FileIntake:
    """One file part on its way to the blob store: streamed there, or (an image) held, checked and
    stored whole. `discard` leaves nothing stored, whatever point it was reached."""

    def __init__(
        self, start: FileStart, purpose: FilePurpose, settings: Settings, blobs: BlobStore, key: str
    ) -> None:
        self.start, self.purpose, self.settings, self.blobs, self.key = start, purpose, settings, blobs, key
        self.counter = _Counter(_caps(purpose, settings), purpose)
        self.content_type = _content_type(purpose, start.content_type)
        self._image = bytearray() if purpose == FilePurpose.VISION else None
        self._writer = None if self._image is not None else BlobWriter(blobs, key, self.content_type)
        self.stored = False

    async def write(self, data: bytes) -> None:
        self.counter.add(data)
        if self._image is not None:
            self._image += data
        else:
            await self._writer.write(data)

    async def finish(self) -> None:
        if self._image is None:
            await self._writer.finish()
        else:
            image = validate_image(
                bytes(self._image),
                name=f"The file '{self.start.filename}'",
                field="file",
                max_bytes=self.settings.max_upload_bytes,
                max_pixels=self.settings.max_upload_pixels,
            )
            self.content_type = image.content_type
            await run_in_threadpool(self.blobs.put, self.key, image.data, image.content_type)
        self.stored = True

    async def discard(self) -> None:
        if self.stored:
            await run_in_threadpool(self.blobs.delete, self.key)
        elif self._writer is not None:
            await self._writer.abort()


def _content_type(purpose: FilePurpose, declared: str | None) -> str:
    """What `/content` will say the bytes are (a `vision` file's is its image format's)."""
    if purpose == FilePurpose.BATCH:
        return "application/jsonl"
    media_type = (declared or "").split(";")[0].strip().lower()
    return media_type if _MEDIA_TYPE.match(media_type) and len(media_type) <= 100 else "application/octet-stream"


async def receive_file(request: Request, settings: Settings, blobs: BlobStore, key: str) -> ReceivedFile:
    """Read the upload form, storing its file under `key` as it arrives; a refusal of any kind
    leaves nothing under `key`."""
    fields: dict[str, str] = {}
    intake: _FileIntake | None = None
    ended = False
    try:
        async with aclosing(multipart_parts(request)) as parts:
            async for part in parts:
                if isinstance(part, TextField):
                    _add_field(fields, part)
                elif isinstance(part, FileStart):
                    intake = _start_file(intake, part, fields, settings, blobs, key)
                elif isinstance(part, FileChunk):
                    await intake.write(part.data)
                else:
                    await intake.finish()
                    ended = True
        if intake is None:
            missing = "file" if "purpose" in fields else "purpose"
            raise bad_request(
                f"Missing required parameter: '{missing}'.", param=missing, code="missing_required_parameter"
            )
        if not ended:
            raise bad_request("The upload ended before the file did.", param="file", code="upload_incomplete")
        return ReceivedFile(
            purpose=intake.purpose,
            filename=intake.start.filename,
            content_type=intake.content_type,
            size=intake.counter.size,
            line_count=intake.counter.lines if intake.purpose == FilePurpose.BATCH else None,
            lifetime=_lifetime(intake.purpose, fields),
        )
    except BaseException:
        if intake is not None:
            await intake.discard()
        raise


def _add_field(fields: dict[str, str], field: TextField) -> None:
    if field.name != "purpose" and field.name not in _EXPIRES_AFTER:
        raise bad_request(f"Unknown parameter: '{field.name}'.", param=field.name, code="unknown_parameter")
    if field.name in fields:
        raise bad_request(f"Parameter '{field.name}' is sent twice.", param=field.name)
    if field.name == "purpose":
        parse_purpose(field.value)  # refused before any byte of the file is read
    fields[field.name] = field.value


def _start_file(
    intake: _FileIntake | None,
    start: FileStart,
    fields: dict[str, str],
    settings: Settings,
    blobs: BlobStore,
    key: str,
) -> _FileIntake:
    if start.name != "file":
        raise bad_request(f"Unknown file parameter: '{start.name}'.", param=start.name, code="unknown_parameter")
    if intake is not None:
        raise bad_request("Send one file per upload.", param="file")
    if "purpose" not in fields:
        raise bad_request(
            "Missing required parameter: 'purpose'. Send it before the file part: the file is checked "
            "against its purpose's limits as it arrives.",
            param="purpose",
            code="missing_required_parameter",
        )
    purpose = parse_purpose(fields["purpose"])
    if all(name in fields for name in _EXPIRES_AFTER):
        _lifetime(purpose, fields)  # an expires_after sent before the file is refused before it, too
    return _FileIntake(start, purpose, settings, blobs, key)


def _lifetime(purpose: FilePurpose, fields: dict[str, str]) -> timedelta | None:
    sent = {name: fields[form_name] for form_name, name in _EXPIRES_AFTER.items() if form_name in fields}
    if not sent:
        return BATCH_FILE_LIFETIME if purpose == FilePurpose.BATCH else None
    try:
        expires_after = ExpiresAfter.model_validate(sent)
    except ValidationError as error:
        errors = [{**item, "loc": ("body", "expires_after", *item["loc"])} for item in error.errors()]
        raise validation_error(errors) from None
    return timedelta(seconds=expires_after.seconds)
