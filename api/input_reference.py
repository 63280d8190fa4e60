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
while the client waits (api/image_fetch.py), so a bad URL is a 400 now rather than a failed job
later. Decoding and the image checks run off the event loop: an image of millions of pixels, or a
data: URL of tens of megabytes, would otherwise stall every other request meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.bodies import Upload, read_image_upload, validate_image
from api.deps import Services
from api.errors import APIError, bad_request, not_found
from api.image_fetch import URL_PARAM, fetch_image
from api.schemas import ImageReference, VideoCreateRequest
from darkroom.data_url import BadDataURL, DataURLTooLarge, decode_payload, parse_image_data_url
from storage import files
from storage.blobs import BlobNotFound
from storage.models import FilePurpose

PARAM = "input_reference"
HOW_TO_SEND = (
    "Send the image as the file part 'input_reference', or as 'input_reference[image_url]' with "
    "an https URL or a data:image/...;base64, URL, or as 'input_reference[file_id]' naming a file "
    "uploaded with purpose 'vision' or 'user_data'."
)
IMAGE_FILE_PURPOSES = (FilePurpose.VISION, FilePurpose.USER_DATA)


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
        return await run_in_threadpool(_read_data_url, url, url_param, limits)
    data = await fetch_image(url, settings, services.image_fetches, owner, param=url_param)
    return await run_in_threadpool(
        validate_image, data, name=f"The image at {url_param}", field=url_param, **limits
    )


def _read_data_url(url: str, param: str, limits: dict[str, int]) -> Upload:
    data = decode_data_url(url, max_bytes=limits["max_bytes"], param=param)
    return validate_image(data, name=f"The {param} data: URL", field=param, **limits)


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
    try:
        return decode_payload(parse_image_data_url(url, max_bytes=max_bytes))
    except DataURLTooLarge:
        raise APIError(
            413, f"The {param} data: URL is over the {max_bytes} byte limit.", param=param, code="file_too_large"
        ) from None
    except BadDataURL as error:
        raise bad_request(
            f"The data: URL in {param} is not data:image/<type>;base64,<data>: {error}.",
            param=param,
            code="invalid_image_url",
        ) from None
