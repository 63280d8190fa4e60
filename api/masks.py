"""An edit's `mask`, checked at the edge: OpenAI's PNG whose fully transparent pixels mark the area
to edit, the size of the image it applies to. It is stored with the images, as the last input,
and the job's params name its index (`mask_input`, api/submission/params.py), so the worker (and
a retry after a worker crash) runs the same masked edit."""

from __future__ import annotations

import io

from PIL import Image
from starlette.datastructures import UploadFile

from api.bodies import Upload, read_image_upload
from api.errors import bad_request
from darkroom.settings import Settings
from pipelines.spec.masks import edits_anything, has_alpha, repaint_area
from pipelines.spec.registry import REGISTRY, ModelSpec


async def read_mask(
    upload: UploadFile, *, spec: ModelSpec, images: list[Upload], settings: Settings
) -> Upload:
    """The mask's upload if `spec` takes one and it is a PNG with alpha the size of the image."""
    if spec.inpaint_pipeline_class is None:
        takers = [name for name in settings.models if REGISTRY[name].inpaint_pipeline_class] or ["none"]
        raise bad_request(
            f"The model '{spec.name}' does not take a mask. Models served here that do: {', '.join(takers)}.",
            param="mask",
            code="unsupported_parameter",
        )
    if len(images) != 1:
        # OpenAI applies the mask to the first image; the inpainting pipeline takes one image, and
        # quietly dropping the others would edit something else than what was asked.
        raise bad_request(
            f"A mask applies to one image: '{spec.name}' inpaints a single image, and {len(images)} were "
            "sent. Send one image with its mask, or several images without a mask.",
            param="mask",
            code="unsupported_parameter",
        )
    mask = await read_image_upload(
        upload, field="mask", max_bytes=settings.max_upload_bytes, max_pixels=settings.max_upload_pixels
    )
    name = upload.filename
    if mask.content_type != "image/png":
        raise bad_request(
            f"The mask '{name}' is {mask.content_type}; a mask is a PNG with an alpha channel.",
            param="mask",
            code="invalid_image_format",
        )
    image = Image.open(io.BytesIO(mask.data))
    if not has_alpha(image):
        raise bad_request(
            f"The mask '{name}' has no alpha channel (mode {image.mode}); its fully transparent pixels "
            "(alpha 0) mark the area to edit.",
            param="mask",
            code="invalid_mask",
        )
    image_size = (images[0].width, images[0].height)
    if (mask.width, mask.height) != image_size:
        raise bad_request(
            f"The mask is {mask.width}x{mask.height} and the image {image_size[0]}x{image_size[1]}; a mask "
            "must be the size of the image it applies to.",
            param="mask",
            code="invalid_mask",
        )
    if not edits_anything(repaint_area(image)):
        raise bad_request(
            f"The mask '{name}' has no fully transparent pixel (alpha 0), so nothing would be edited; "
            "make the area to edit transparent.",
            param="mask",
            code="invalid_mask",
        )
    return mask
