"""Reading request bodies: multipart (what the SDK sends) or JSON, into a strict request model
plus the uploaded files, with limits checked before anything is stored."""

from __future__ import annotations

import io
import json
import re
import warnings
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request
from PIL import Image
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from api.errors import APIError, bad_request, validation_error

RequestModel = TypeVar("RequestModel", bound=BaseModel)

# `image[]` (a list in the SDK) and `image` (one file) are the same field; `a[b]` is `a.b`.
_LIST_SUFFIX = re.compile(r"\[\]$")
# A list of objects, as the SDK sends `lora=[{...}, {...}]` in multipart: `lora[][path_or_id]`.
_OBJECT_LIST_FIELD = re.compile(r"^([A-Za-z_]\w*)\[\]\[([A-Za-z_]\w*)\]$")
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
    request: Request, model: type[RequestModel], *, file_fields: tuple[str, ...], max_bytes: int
) -> tuple[RequestModel, dict[str, list[UploadFile]]]:
    content_type = request.headers.get("content-type", "")
    files: dict[str, list[UploadFile]] = {}
    if content_type.startswith("multipart/form-data"):
        declared = int(request.headers.get("content-length") or 0)
        if declared > max_bytes * 4:
            raise APIError(
                413, f"Request body of {declared} bytes is over the limit.", code="request_too_large"
            )
        # A text field may carry a whole image as a data: URL (`input_reference[image_url]`
        # through the SDK's extra_body): base64 is 4/3 of the bytes, plus the URL's header.
        form = await request.form(max_files=32, max_fields=64, max_part_size=max_bytes * 4 // 3 + 1024)
        fields: dict[str, object] = {}
        object_lists: dict[str, list[dict[str, object]]] = {}
        for key, value in form.multi_items():
            name = _LIST_SUFFIX.sub("", key)
            if isinstance(value, UploadFile):
                if name not in file_fields:
                    raise bad_request(f"Unknown file parameter: '{name}'.", param=name, code="unknown_parameter")
                files.setdefault(name, []).append(value)
            elif match := _OBJECT_LIST_FIELD.match(key):
                _add_to_object_list(object_lists.setdefault(match[1], []), match[2], value)
            else:
                fields[_bracket_to_dotted(name)] = value
        data = _lists_from_indices(_nest(fields))
        for name, items in object_lists.items():
            if name in data:
                raise bad_request(f"Parameter '{name}' is sent in two forms.", param=name)
            data[name] = items
    elif content_type.startswith("application/json"):
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad_request("The request body is not valid JSON.", param=None, code="invalid_json") from None
        if not isinstance(data, dict):
            raise bad_request("The request body must be a JSON object.", param=None, code="invalid_json")
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
    return validate_image(
        data, name=f"Image '{upload.filename}'", field=field, max_bytes=max_bytes, max_pixels=max_pixels
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
