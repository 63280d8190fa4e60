"""An edit's input images and mask, from either form of `POST /v1/images/edits`: multipart file
parts `image` (repeated) and `mask`, as the SDK sends them, or the JSON body's
`images: [{image_url | file_id}, ...]` and `mask: {image_url | file_id}`, as OpenAI's JSON form
has them. Both become the same `ImageRef`s here, then the same checked `Upload`s
(api/input_reference.py), so everything after is one route: the same rules, limits and errors."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import UploadFile

from api.errors import bad_request
from api.input_reference import ImageRef, image_ref
from api.masks import check_takes_mask
from api.schemas import ImageEditRequest
from darkroom.settings import Settings
from pipelines.spec.registry import ModelSpec


@dataclass(frozen=True)
class EditRefs:
    images: list[ImageRef]
    mask: ImageRef | None


def edit_refs(
    body: ImageEditRequest,
    parts: dict[str, list[UploadFile]],
    spec: ModelSpec,
    settings: Settings,
    *,
    json_body: bool,
) -> EditRefs:
    """Where the edit's images and mask are, checked before any of them is read or fetched."""
    image_parts, mask_parts = parts.get("image", []), parts.get("mask", [])
    if image_parts and body.images is not None:
        raise bad_request(
            "Send the images either as file parts 'image' or as 'images' references, not both.", param="images"
        )
    if mask_parts and body.mask is not None:
        raise bad_request("Send the mask either as a file part or as a reference, not both.", param="mask")
    images = [ImageRef("image", file=part) for part in image_parts] or [
        image_ref(f"images[{index}]", named) for index, named in enumerate(body.images or ())
    ]
    images_param = "images" if json_body else "image"
    if not images:
        raise bad_request(
            f"Missing required parameter: '{images_param}'.", param=images_param, code="missing_required_parameter"
        )
    if len(images) > spec.max_input_images:
        raise bad_request(
            f"The model '{spec.name}' takes at most {spec.max_input_images} images; got {len(images)}.",
            param=images_param,
        )
    if len(mask_parts) > 1:
        raise bad_request(f"Send one mask, not {len(mask_parts)}.", param="mask")
    mask = None
    if mask_parts:
        mask = ImageRef("mask", file=mask_parts[0])
    elif body.mask is not None:
        mask = image_ref("mask", body.mask)
    if mask is not None:
        check_takes_mask(spec, image_count=len(images), settings=settings)
    return EditRefs(images, mask)
