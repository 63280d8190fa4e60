"""Reading request bodies: multipart (what the SDK sends) or JSON, into a strict request model
plus the uploaded files, with limits checked before anything is stored."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from api.errors import APIError, bad_request, validation_error
from api.request_body import is_json, json_object
from darkroom.data_url import data_url_chars
from darkroom.settings import Settings

RequestModel = TypeVar("RequestModel", bound=BaseModel)

# `image[]` (a list in the SDK) and `image` (one file) are the same field; `a[b]` is `a.b`.
_LIST_SUFFIX = re.compile(r"\[\]$")
# A list of objects, as the SDK sends `lora=[{...}, {...}]` in multipart: `lora[][path_or_id]`.
_OBJECT_LIST_FIELD = re.compile(r"^([A-Za-z_]\w*)\[\]\[([A-Za-z_]\w*)\]$")
# The text fields that may carry an image as a data: URL: `input_reference[image_url]`.
_DATA_URL_FIELD = re.compile(r"\[image_url\]$")
_ALLOWED_IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class Upload:
    """One validated image upload, kept as the bytes the client sent."""

    field: str
    data: bytes
    content_type: str
    width: int
    height: int


async def read_body(
    request: Request, model: type[RequestModel], *, file_fields: tuple[str, ...], settings: Settings
) -> tuple[RequestModel, dict[str, list[UploadFile]]]:
    content_type = request.headers.get("content-type", "")
    files: dict[str, list[UploadFile]] = {}
    if content_type.startswith("multipart/form-data"):
        fields: dict[str, object] = {}
        object_lists: dict[str, list[dict[str, object]]] = {}
        for key, value in (await _read_form(request, settings)).multi_items():
            name = _LIST_SUFFIX.sub("", key)
            if isinstance(value, UploadFile):
                if name not in file_fields:
                    raise bad_request(f"Unknown file parameter: '{name}'.", param=name, code="unknown_parameter")
                files.setdefault(name, []).append(value)
            elif match := _OBJECT_LIST_FIELD.match(key):
                _add_to_object_list(object_lists.setdefault(match[1], []), match[2], value)
            else:
                dotted = _bracket_to_dotted(name)
                if dotted in fields:
                    # Which of the two was meant is a guess either way: keeping one would silently drop the other.
                    raise bad_request(f"Parameter '{dotted}' is sent more than once; send it once.", param=dotted)
                fields[dotted] = value
        data = _lists_from_indices(_nest(fields))
        for name, items in object_lists.items():
            if name in data:
                raise bad_request(f"Parameter '{name}' is sent in two forms.", param=name)
            data[name] = items
    elif is_json(content_type):
        data = await json_object(request)
    else:
        raise bad_request(
            "Send the request as multipart/form-data or application/json.",
            param=None,
            code="unsupported_content_type",
        )
    try:
        return model.model_validate(data), files
    except ValidationError as error:
        # Locate the errors in the body, as FastAPI's own validation does.
        raise validation_error([{**item, "loc": ("body", *item["loc"])} for item in error.errors()]) from None


async def _read_form(request: Request, settings: Settings) -> FormData:
    try:
        async with aclosing(request.stream()) as stream:
            return await _CappedFormParser(request.headers, stream, settings).parse()
    except MultiPartException as error:
        raise bad_request(f"The multipart body cannot be read: {error.message}", param=None) from None


class _CappedFormParser(MultiPartParser):
    """Starlette's multipart parser with a cap on each text field, checked as its bytes arrive: a
    few kilobytes, except an `[image_url]` field, which may carry a whole image as a data: URL
    (`input_reference[image_url]` through the SDK's extra_body)."""

    def __init__(self, headers: Headers, stream: AsyncGenerator[bytes, None], settings: Settings) -> None:
        super().__init__(headers, stream, max_files=32, max_fields=64)
        self.settings = settings

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        if _DATA_URL_FIELD.search(self._current_part.field_name):
            self.max_part_size = data_url_chars(self.settings.max_upload_bytes)
        else:
            self.max_part_size = self.settings.max_form_field_bytes

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current_part
        if part.file is None and len(part.data) + end - start > self.max_part_size:
            name = _bracket_to_dotted(_LIST_SUFFIX.sub("", part.field_name))
            if _DATA_URL_FIELD.search(part.field_name):
                raise APIError(
                    413,
                    f"The data: URL in '{name}' is over the {self.settings.max_upload_bytes} byte image limit.",
                    param=name,
                    code="file_too_large",
                )
            raise bad_request(
                f"The form field '{name}' is over {self.max_part_size} bytes, the most a text field may hold.",
                param=name,
            )
        super().on_part_data(data, start, end)


def _add_to_object_list(items: list[dict[str, object]], key: str, value: object) -> None:
    """`a[][x]=1, a[][y]=2, a[][x]=3` -> `[{x: 1, y: 2}, {x: 3}]`: a key already set in the last
    object starts the next one (the SDK sends each object's keys together, in order)."""
    if not items or key in items[-1]:
        items.append({})
    items[-1][key] = value


def _lists_from_indices(value: object) -> object:
    """`{"lora": {"0": {...}, "1": {...}}}` (from `lora[0][...]`) -> `{"lora": [{...}, {...}]}`."""
    if not isinstance(value, dict):
        return value
    value = {key: _lists_from_indices(child) for key, child in value.items()}
    if value and all(key.isdigit() for key in value):
        by_index = {int(key): child for key, child in value.items()}
        if sorted(by_index) == list(range(len(by_index))):
            return [by_index[index] for index in range(len(by_index))]
    return value


def _bracket_to_dotted(name: str) -> str:
    return name.replace("][", ".").replace("[", ".").replace("]", "")


def _nest(fields: dict[str, object]) -> dict[str, object]:
    """`{"input_reference.image_url": v}` -> `{"input_reference": {"image_url": v}}`."""
    nested: dict[str, object] = {}
    for dotted, value in fields.items():
        *parents, leaf = dotted.split(".")
        target = nested
        for parent in parents:
            child = target.setdefault(parent, {})
            if not isinstance(child, dict):
                raise bad_request(f"Parameter '{dotted}' conflicts with '{parent}'.", param=dotted)
            target = child
        target[leaf] = value
    return nested


async def read_image_upload(
    upload: UploadFile, *, field: str, max_bytes: int, max_pixels: int
) -> Upload:
    """The upload's bytes if they are one PNG, JPEG or WebP image within the limits."""
    data = await upload.read(max_bytes + 1)
    # Decoding an image of millions of pixels takes a while: off the event loop.
    return await run_in_threadpool(
        validate_image,
        data,
        name=f"Image '{upload.filename}'",
        field=field,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
    )


def validate_image(data: bytes, *, name: str, field: str, max_bytes: int, max_pixels: int) -> Upload:
    """`data` as an `Upload` if it is one PNG, JPEG or WebP image within the limits, however it
    arrived (a file part, a data: URL, a fetched URL); `name` says which input it is.

    The pixel count is checked from the header before any pixel is decoded, so a small file that
    claims to be enormous (a decompression bomb) is refused without being expanded.
    """
    if len(data) > max_bytes:
        raise APIError(413, f"{name} is over the {max_bytes} byte limit.", param=field, code="file_too_large")
    too_large = APIError(400, f"{name} is over the {max_pixels} pixel limit.", param=field, code="image_too_large")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise too_large
            if image.format not in _ALLOWED_IMAGE_FORMATS:
                raise bad_request(
                    f"{name} is {image.format}; send PNG, JPEG or WebP.",
                    param=field,
                    code="invalid_image_format",
                )
            image.load()  # decode once, so a truncated or corrupt file is refused here
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_large from None
    except (OSError, SyntaxError, ValueError):
        raise bad_request(
            f"{name} is not a valid PNG, JPEG or WebP image.", param=field, code="invalid_image"
        ) from None
    return Upload(field, data, _ALLOWED_IMAGE_FORMATS[image.format], width, height)
