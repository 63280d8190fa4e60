"""An edit's `mask` (a file part, or `{image_url | file_id}` in the JSON form), checked at the
edge: OpenAI's PNG whose fully transparent pixels mark the area to edit, the size of the image it
applies to. It is stored with the images, as the last input, and the job's params name its index
(`mask_input`, api/submission/params.py), so the worker (and a retry after a worker crash) runs
the same masked edit."""

from __future__ import annotations

import io

from PIL import Image

from api.bodies import Upload
from api.errors import bad_request
from darkroom.settings import Settings
from pipelines.spec.masks import edits_anything, has_alpha, repaint_area
from pipelines.spec.registry import REGISTRY, ModelSpec


def check_takes_mask(spec: ModelSpec, *, image_count: int, settings: Settings) -> None:
    """Whether this edit may have a mask at all: asked before any image is read or fetched."""
    if spec.inpaint_pipeline_class is None:
        takers = [name for name in settings.models if REGISTRY[name].inpaint_pipeline_class] or ["none"]
        raise bad_request(
            f"The model '{spec.name}' does not take a mask. Models served here that do: {', '.join(takers)}.",
            param="mask",
            code="unsupported_parameter",
        )
    if image_count != 1:
        # OpenAI applies the mask to the first image; the inpainting pipeline takes one image, and
        # quietly dropping the others would edit something else than what was asked.
        raise bad_request(
            f"A mask applies to one image: '{spec.name}' inpaints a single image, and {image_count} were "
            "sent. Send one image with its mask, or several images without a mask.",
            param="mask",
            code="unsupported_parameter",
        )


def check_mask(mask: Upload, *, image: Upload) -> Upload:
    """The mask, however it was sent, if it is a PNG with alpha the size of the image and marks
    something to edit."""
    if mask.content_type != "image/png":
        raise bad_request(
            f"The mask is {mask.content_type}; a mask is a PNG with an alpha channel.",
            param="mask",
            code="invalid_image_format",
        )
    decoded = Image.open(io.BytesIO(mask.data))
    if not has_alpha(decoded):
        raise bad_request(
            f"The mask has no alpha channel (mode {decoded.mode}); its fully transparent pixels "
            "(alpha 0) mark the area to edit.",
            param="mask",
            code="invalid_mask",
        )
    if (mask.width, mask.height) != (image.width, image.height):
        raise bad_request(
            f"The mask is {mask.width}x{mask.height} and the image {image.width}x{image.height}; a mask "
            "must be the size of the image it applies to.",
            param="mask",
            code="invalid_mask",
        )
    if not edits_anything(repaint_area(decoded)):
        raise bad_request(
            "The mask has no fully transparent pixel (alpha 0), so nothing would be edited; "
            "make the area to edit transparent.",
            param="mask",
            code="invalid_mask",
        )
    return mask
