"""Masks: OpenAI's convention turned into diffusers', the kept pixels pasted back, and the API's
checks on an uploaded mask."""

from __future__ import annotations

import asyncio
import dataclasses
import io

import numpy as np
import pytest
from PIL import Image
from starlette.datastructures import UploadFile

from api.bodies import Upload, read_image_upload
from api.errors import APIError
from api.masks import check_mask, check_takes_mask
from darkroom.settings import Settings
from pipelines.spec.masks import edits_anything, keep_unmasked, repaint_area
from pipelines.spec.registry import get_model

SETTINGS = Settings()
EDIT = get_model("tiny-qwen-image-edit")


def png(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def test_only_fully_transparent_pixels_are_repainted():
    alpha = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    mask = Image.fromarray(np.dstack([np.full_like(alpha, 200)] * 3 + [alpha]), "RGBA")
    area = repaint_area(mask)
    assert area.mode == "L" and area.size == (4, 1)
    assert np.asarray(area).tolist() == [[255, 0, 0, 0]]  # white = repaint, in diffusers' convention
    assert edits_anything(area)
    assert not edits_anything(repaint_area(Image.new("RGBA", (4, 4), (0, 0, 0, 255))))


def test_grey_alpha_and_palette_transparency_count_as_alpha():
    la = Image.new("LA", (2, 1), (0, 255))
    la.putpixel((1, 0), (0, 0))
    assert np.asarray(repaint_area(la)).tolist() == [[0, 255]]
    # A palette PNG whose index 1 is transparent (a tRNS chunk), as many editors write masks.
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255])
    palette.putpixel((1, 0), 1)
    reloaded = Image.open(io.BytesIO(png(palette, transparency=1)))
    assert np.asarray(repaint_area(reloaded)).tolist() == [[0, 255]]


def test_a_mask_without_alpha_is_refused():
    with pytest.raises(ValueError, match="no alpha"):
        repaint_area(Image.new("RGB", (4, 4), "white"))


def test_kept_pixels_come_from_the_original_and_the_area_from_the_edit():
    original = Image.new("RGB", (8, 4), (10, 20, 30))
    edited = Image.new("RGB", (8, 4), (200, 100, 50))
    area = Image.new("L", (8, 4), 0)
    area.paste(255, (0, 0, 4, 4))
    result = np.asarray(keep_unmasked(edited, original, area))
    assert (result[:, :4] == (200, 100, 50)).all() and (result[:, 4:] == (10, 20, 30)).all()


def test_another_output_size_resizes_the_original_and_the_area_with_it():
    original = Image.new("RGB", (16, 8), (10, 20, 30))
    area = Image.new("L", (16, 8), 0)
    area.paste(255, (0, 0, 8, 8))
    result = np.asarray(keep_unmasked(Image.new("RGB", (32, 16), (200, 100, 50)), original, area))
    assert result.shape == (16, 32, 3)
    assert (result[:, :16] == (200, 100, 50)).all() and (result[:, 16:] == (10, 20, 30)).all()


# --- the API's checks -----------------------------------------------------------------------


def image_upload(size=(48, 32)) -> Upload:
    return Upload("image", png(Image.new("RGB", size, "red")), "image/png", *size)


def left_half_mask(size=(48, 32)) -> Image.Image:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    return mask


def check(data: bytes, spec=EDIT, images=None) -> Upload:
    """What the edit route does with a mask part: may it have one, then read it, then check it."""
    images = images if images is not None else [image_upload()]
    check_takes_mask(spec, image_count=len(images), settings=SETTINGS)
    upload = UploadFile(io.BytesIO(data), filename="mask.png")
    limits = {"max_bytes": SETTINGS.max_upload_bytes, "max_pixels": SETTINGS.max_upload_pixels}
    mask = asyncio.run(read_image_upload(upload, field="mask", **limits))
    return check_mask(mask, image=images[0])


def refusal(data: bytes, **kwargs) -> APIError:
    with pytest.raises(APIError) as error:
        check(data, **kwargs)
    assert (error.value.status, error.value.param) == (400, "mask")
    return error.value


def test_a_png_with_alpha_the_size_of_the_image_is_taken_as_sent():
    data = png(left_half_mask())
    mask = check(data)
    assert (mask.field, mask.data, mask.content_type, mask.width, mask.height) == ("mask", data, "image/png", 48, 32)


def test_a_mask_without_alpha_is_a_400_that_says_so():
    error = refusal(png(Image.new("RGB", (48, 32), "black")))
    assert error.code == "invalid_mask" and "no alpha channel (mode RGB)" in error.message


def test_a_mask_of_another_size_is_a_400_naming_both_sizes():
    error = refusal(png(left_half_mask((32, 32))))
    assert error.code == "invalid_mask" and "32x32" in error.message and "48x32" in error.message


def test_a_mask_that_is_not_a_png_is_refused():
    assert refusal(png(Image.new("RGB", (48, 32)), "JPEG")).code == "invalid_image_format"
    assert refusal(b"not an image at all").code == "invalid_image"


def test_a_fully_opaque_mask_edits_nothing_and_is_refused():
    error = refusal(png(Image.new("RGBA", (48, 32), (0, 0, 0, 255))))
    assert error.code == "invalid_mask" and "no fully transparent pixel" in error.message


def test_a_mask_with_several_images_is_refused():
    error = refusal(png(left_half_mask()), images=[image_upload(), image_upload()])
    assert error.code == "unsupported_parameter" and "one image" in error.message


def test_a_model_without_an_inpainting_pipeline_refuses_a_mask_and_names_those_that_take_one():
    # Every edit model in the registry takes masks; a spec without its inpainting pipeline stands
    # in for one that does not.
    no_masks = dataclasses.replace(EDIT, name="edit-without-masks", inpaint_pipeline_class=None)
    error = refusal(png(left_half_mask()), spec=no_masks)
    assert error.code == "unsupported_parameter"
    assert "'edit-without-masks' does not take a mask" in error.message and "tiny-qwen-image-edit" in error.message
