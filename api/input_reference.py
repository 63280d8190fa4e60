"""`input_reference` on `POST /v1/videos`: the image a video starts from, in each form the OpenAI
contract allows, made into the same validated `Upload` an edit's file part becomes.

- a file part `input_reference` (what `client.videos.create(input_reference=...)` sends);
- `input_reference[image_url]`: an https URL or a `data:image/...;base64,` URL, as form fields
  through the SDK's `extra_body`, or as a JSON object;
- `input_reference[file_id]`: refused, Darkroom has no Files API for images.

A URL is fetched here, while the client waits, so a bad URL is a 400 now rather than a failed job
later. It goes through darkroom/outbound.py exactly as a webhook does: public addresses only
(unless allow-listed), no redirects, no proxy, the connection pinned to the vetted address.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.bodies import Upload, read_image_upload, validate_image
from api.errors import APIError, bad_request
from api.schemas import VideoCreateRequest
from darkroom.outbound import UnsafeURL, check_url, safe_client, send_pinned
from darkroom.settings import Settings

PARAM = "input_reference"
URL_PARAM = "input_reference.image_url"
FILE_ID_PARAM = "input_reference.file_id"
HOW_TO_SEND = (
    "Send the image as the file part 'input_reference', or as 'input_reference[image_url]' with "
    "an https URL or a data:image/...;base64, URL."
)
# data:[<media type>][;parameters];base64,<payload>, the media type an image's.
_DATA_URL = re.compile(
    r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*),(?P<payload>.*)$", re.DOTALL | re.IGNORECASE
)
_HEADERS = {"accept": "image/png, image/jpeg, image/webp", "user-agent": "Darkroom"}


@dataclass(frozen=True)
class ReferenceSource:
    """Where the request's input image is, before anything is read or fetched: one of the two."""

    file: UploadFile | None = None
    image_url: str | None = None


def reference_source(body: VideoCreateRequest, files: dict[str, list[UploadFile]]) -> ReferenceSource | None:
    """The input_reference the request names, its shape checked; None if it names none."""
    parts = files.get(PARAM, [])
    named = body.input_reference
    if len(parts) > 1:
        raise bad_request(f"Send one input_reference image; got {len(parts)}.", param=PARAM)
    if parts and named is not None:
        raise bad_request(
            "Send input_reference either as a file part or as an object (image_url), not both.", param=PARAM
        )
    if named is None:
        return ReferenceSource(file=parts[0]) if parts else None
    if named.file_id is not None:
        raise bad_request(
            "This server has no Files API, so there is no file for 'input_reference.file_id' to "
            f"name. {HOW_TO_SEND}",
            param=FILE_ID_PARAM,
            code="unsupported_parameter",
        )
    if named.image_url is None or not named.image_url.strip():
        raise bad_request(
            f"Missing required parameter: '{URL_PARAM}'. {HOW_TO_SEND}",
            param=URL_PARAM,
            code="missing_required_parameter",
        )
    return ReferenceSource(image_url=named.image_url.strip())


async def read_reference(source: ReferenceSource, settings: Settings) -> Upload:
    """The referenced image's bytes, validated like an edit upload (format, bytes, pixels)."""
    limits = {"max_bytes": settings.max_upload_bytes, "max_pixels": settings.max_upload_pixels}
    if source.file is not None:
        return await read_image_upload(source.file, field=PARAM, **limits)
    url = source.image_url or ""
    if url[:5].lower() == "data:":
        data = decode_data_url(url, max_bytes=settings.max_upload_bytes)
        return validate_image(data, name="The input_reference data: URL", field=URL_PARAM, **limits)
    data = await run_in_threadpool(fetch_image, url, settings)
    return validate_image(data, name="The image at input_reference.image_url", field=URL_PARAM, **limits)


def decode_data_url(url: str, *, max_bytes: int) -> bytes:
    """The bytes of a `data:image/...;base64,` URL; its size is checked before it is decoded."""
    match = _DATA_URL.match(url)
    params = match["params"].lower().split(";") if match else []
    if match is None or "base64" not in params or not match["type"].lower().startswith("image/"):
        raise bad_request(
            "A data: URL in input_reference.image_url must be data:image/<type>;base64,<data>.",
            param=URL_PARAM,
            code="invalid_image_url",
        )
    payload = match["payload"]
    if len(payload) // 4 * 3 > max_bytes + 3:  # base64: 3 bytes per 4 characters
        raise APIError(
            413,
            f"The input_reference data: URL is over the {max_bytes} byte limit.",
            param=URL_PARAM,
            code="file_too_large",
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(
            "The data: URL in input_reference.image_url is not valid base64.",
            param=URL_PARAM,
            code="invalid_image_url",
        ) from None


def fetch_image(url: str, settings: Settings) -> bytes:
    """GET `url` within the byte and time limits, or an APIError saying what went wrong."""
    import httpx  # here, as in darkroom/outbound.py: only a request with a URL needs it

    try:
        checked = check_url(
            url,
            allow_http=settings.image_url_allow_http,
            allowed_hosts=settings.image_url_allowed_hosts,
            allow_http_setting="DARKROOM_IMAGE_URL_ALLOW_HTTP",
            allowed_hosts_setting="DARKROOM_IMAGE_URL_ALLOWED_HOSTS",
        )
    except UnsafeURL as error:
        raise bad_request(
            f"Invalid input_reference.image_url: {error}", param=URL_PARAM, code="invalid_image_url"
        ) from None
    limit_s, max_bytes = settings.image_url_timeout_s, settings.max_upload_bytes
    # httpx's timeout bounds each connect and read; the deadline bounds the whole download, so
    # a server that drips a byte at a time cannot hold a request open.
    deadline = time.monotonic() + limit_s
    timed_out = bad_request(
        f"Fetching input_reference.image_url took longer than {limit_s:g} s.",
        param=URL_PARAM,
        code="image_url_timeout",
    )
    too_large = APIError(
        413,
        f"The image at input_reference.image_url is over the {max_bytes} byte limit.",
        param=URL_PARAM,
        code="file_too_large",
    )
    try:
        with (
            safe_client(timeout_s=limit_s) as client,
            send_pinned(client, "GET", checked, headers=_HEADERS) as response,
        ):
            _refuse_unless_ok(response)
            if int(response.headers.get("content-length") or 0) > max_bytes:
                raise too_large
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise too_large
                if time.monotonic() > deadline:
                    raise timed_out
            return bytes(data)
    except httpx.TimeoutException:
        raise timed_out from None
    except (httpx.HTTPError, ValueError) as error:
        raise bad_request(
            f"Could not fetch input_reference.image_url: {error or type(error).__name__}.",
            param=URL_PARAM,
            code="image_url_unreachable",
        ) from None


def _refuse_unless_ok(response) -> None:
    if response.is_redirect:
        # Not followed: the place it points to was never checked (see darkroom/outbound.py).
        raise bad_request(
            f"input_reference.image_url answered with a redirect (HTTP {response.status_code}) to "
            f"'{response.headers.get('location', '')}'; redirects are not followed. Give the final URL.",
            param=URL_PARAM,
            code="image_url_unreachable",
        )
    if response.status_code != 200:
        raise bad_request(
            f"input_reference.image_url answered HTTP {response.status_code}, not 200 with an image.",
            param=URL_PARAM,
            code="image_url_unreachable",
        )
