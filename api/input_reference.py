"""Input images named by reference, made into the same validated `Upload` a file part becomes
(format, bytes, pixels: api/bodies.py). First `input_reference` on `POST /v1/videos`; the same
object names an edit's images and mask in its JSON form (api/edit_inputs.py). Each form the OpenAI
contract allows:

- a file part (`client.videos.create(input_reference=...)`, an edit's `image` and `mask` parts);
- `{"image_url": ...}`: an https URL or a `data:image/...;base64,` URL, as a JSON object or as
  form fields (`input_reference[image_url]` through the SDK's `extra_body`);
- `{"file_id": ...}`: a file of the caller's uploaded through `/v1/files` with purpose `vision`
  or `user_data`. Another key's file is as absent as one that never existed (a 404).

Shapes are checked before anything is read, so a bad request costs no download. A URL is fetched
here, while the client waits, so a bad URL is a 400 now rather than a failed job later. It goes
through darkroom/outbound.py exactly as a webhook does: public addresses only (unless
allow-listed), no redirects, no proxy, the connection pinned to the vetted address.
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
from api.deps import Services
from api.errors import APIError, bad_request, not_found
from api.schemas import ImageReference, VideoCreateRequest
from darkroom.outbound import UnsafeURL, check_url, safe_client, send_pinned
from darkroom.settings import Settings
from storage import files
from storage.blobs import BlobNotFound
from storage.models import FilePurpose

PARAM = "input_reference"
URL_PARAM = "input_reference.image_url"
HOW_TO_SEND = (
    "Send the image as the file part 'input_reference', or as 'input_reference[image_url]' with "
    "an https URL or a data:image/...;base64, URL, or as 'input_reference[file_id]' naming a file "
    "uploaded with purpose 'vision' or 'user_data'."
)
IMAGE_FILE_PURPOSES = (FilePurpose.VISION, FilePurpose.USER_DATA)
# data:[<media type>][;parameters];base64,<payload>, the media type an image's.
_DATA_URL = re.compile(
    r"^data:(?P<type>[^;,]*)(?P<params>(;[^;,]*)*),(?P<payload>.*)$", re.DOTALL | re.IGNORECASE
)
_HEADERS = {"accept": "image/png, image/jpeg, image/webp", "user-agent": "Darkroom"}


@dataclass(frozen=True)
class ImageRef:
    """Where one input image is, before anything is read: exactly one of the three forms."""

    param: str  # what errors name: "input_reference", "images[1]", "mask", "image"
    file: UploadFile | None = None
    image_url: str | None = None
    file_id: str | None = None


def image_ref(param: str, named: ImageReference) -> ImageRef:
    """The `{image_url | file_id}` object at `param`, its shape checked."""
    if named.image_url is not None and named.file_id is not None:
        raise bad_request(f"Send one of '{param}.image_url' and '{param}.file_id', not both.", param=param)
    if named.file_id is not None and named.file_id.strip():
        return ImageRef(param, file_id=named.file_id.strip())
    if named.image_url is not None and named.image_url.strip():
        return ImageRef(param, image_url=named.image_url.strip())
    missing = f"{param}.file_id" if named.file_id is not None else f"{param}.image_url"
    raise bad_request(
        f"Missing required parameter: '{missing}': name the image with 'image_url' (an https or "
        "data:image/...;base64, URL) or 'file_id' (a file uploaded with purpose 'vision' or 'user_data').",
        param=missing,
        code="missing_required_parameter",
    )


def reference_source(body: VideoCreateRequest, files_sent: dict[str, list[UploadFile]]) -> ImageRef | None:
    """The input_reference the request names, its shape checked; None if it names none."""
    parts = files_sent.get(PARAM, [])
    named = body.input_reference
    if len(parts) > 1:
        raise bad_request(f"Send one input_reference image; got {len(parts)}.", param=PARAM)
    if parts and named is not None:
        raise bad_request(
            "Send input_reference either as a file part or as an object (image_url or file_id), not both.",
            param=PARAM,
        )
    if named is None:
        return ImageRef(PARAM, file=parts[0]) if parts else None
    return image_ref(PARAM, named)


async def read_reference(ref: ImageRef, services: Services, owner: str) -> Upload:
    """The referenced image's bytes, validated like an edit upload (format, bytes, pixels)."""
    settings = services.settings
    limits = {"max_bytes": settings.max_upload_bytes, "max_pixels": settings.max_upload_pixels}
    if ref.file is not None:
        return await read_image_upload(ref.file, field=ref.param, **limits)
    if ref.file_id is not None:
        return await run_in_threadpool(read_image_file, services, owner, ref.file_id, param=f"{ref.param}.file_id")
    url, url_param = ref.image_url or "", f"{ref.param}.image_url"
    if url[:5].lower() == "data:":
        data = decode_data_url(url, max_bytes=settings.max_upload_bytes, param=url_param)
        return validate_image(data, name=f"The {url_param} data: URL", field=url_param, **limits)
    data = await run_in_threadpool(fetch_image, url, settings, param=url_param)
    return validate_image(data, name=f"The image at {url_param}", field=url_param, **limits)


def read_image_file(services: Services, owner: str, file_id: str, *, param: str) -> Upload:
    """The image in the owner's file `file_id`, checked as an upload is."""
    settings = services.settings
    with services.sessions() as session:
        stored = files.get_visible(session, file_id, owner=owner)
    if stored is None:
        raise not_found("file", file_id, param=param)
    if stored.purpose not in IMAGE_FILE_PURPOSES:
        raise bad_request(
            f"File '{file_id}' has purpose '{stored.purpose}'; an image is named by a file uploaded "
            "with purpose 'vision' or 'user_data'.",
            param=param,
            code="invalid_file_purpose",
        )
    name = f"File '{file_id}' ({param})"
    if stored.bytes > settings.max_upload_bytes:  # refused before it is read
        raise APIError(
            413, f"{name} is over the {settings.max_upload_bytes} byte limit.", param=param, code="file_too_large"
        )
    try:
        data = services.blobs.get(files.blob_key(file_id))
    except BlobNotFound:
        raise not_found("file", file_id, param=param) from None  # deleted since the look-up
    return validate_image(
        data, name=name, field=param, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_upload_pixels
    )


def decode_data_url(url: str, *, max_bytes: int, param: str = URL_PARAM) -> bytes:
    """The bytes of a `data:image/...;base64,` URL; its size is checked before it is decoded."""
    match = _DATA_URL.match(url)
    params = match["params"].lower().split(";") if match else []
    if match is None or "base64" not in params or not match["type"].lower().startswith("image/"):
        raise bad_request(
            f"A data: URL in {param} must be data:image/<type>;base64,<data>.",
            param=param,
            code="invalid_image_url",
        )
    payload = match["payload"]
    if len(payload) // 4 * 3 > max_bytes + 3:  # base64: 3 bytes per 4 characters
        raise APIError(
            413,
            f"The {param} data: URL is over the {max_bytes} byte limit.",
            param=param,
            code="file_too_large",
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(
            f"The data: URL in {param} is not valid base64.",
            param=param,
            code="invalid_image_url",
        ) from None


def fetch_image(url: str, settings: Settings, *, param: str = URL_PARAM) -> bytes:
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
            f"Invalid {param}: {error}", param=param, code="invalid_image_url"
        ) from None
    limit_s, max_bytes = settings.image_url_timeout_s, settings.max_upload_bytes
    # httpx's timeout bounds each connect and read; the deadline bounds the whole download, so
    # a server that drips a byte at a time cannot hold a request open.
    deadline = time.monotonic() + limit_s
    timed_out = bad_request(
        f"Fetching {param} took longer than {limit_s:g} s.",
        param=param,
        code="image_url_timeout",
    )
    too_large = APIError(
        413,
        f"The image at {param} is over the {max_bytes} byte limit.",
        param=param,
        code="file_too_large",
    )
    try:
        with (
            safe_client(timeout_s=limit_s) as client,
            send_pinned(client, "GET", checked, headers=_HEADERS) as response,
        ):
            _refuse_unless_ok(response, param)
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
            f"Could not fetch {param}: {error or type(error).__name__}.",
            param=param,
            code="image_url_unreachable",
        ) from None


def _refuse_unless_ok(response, param: str) -> None:
    if response.is_redirect:
        # Not followed: the place it points to was never checked (see darkroom/outbound.py).
        raise bad_request(
            f"{param} answered with a redirect (HTTP {response.status_code}) to "
            f"'{response.headers.get('location', '')}'; redirects are not followed. Give the final URL.",
            param=param,
            code="image_url_unreachable",
        )
    if response.status_code != 200:
        raise bad_request(
            f"{param} answered HTTP {response.status_code}, not 200 with an image.",
            param=param,
            code="image_url_unreachable",
        )
