"""`images.edit` with a `mask`, `background` and the `size` rules, through the official SDK against
the live stack (tiny-qwen-image-edit runs the masked edit through diffusers' inpainting pipeline)."""

from __future__ import annotations

import base64
import io

import numpy as np
import openai
import pytest
from PIL import Image
from sqlalchemy import create_engine

from storage.models import Job

EDIT = "tiny-qwen-image-edit"


def _bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _picture(size=(96, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _mask(size=(96, 48), transparent_width=48) -> Image.Image:
    """OpenAI's convention: the fully transparent left part is edited, the opaque rest kept."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, transparent_width, size[1]))
    return mask


def _decoded(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _edit(client, image: Image.Image, mask: Image.Image | bytes, **kwargs):
    mask_bytes = mask if isinstance(mask, bytes) else _bytes(mask)
    return client.images.edit(
        model=EDIT,
        image=("photo.png", _bytes(image), "image/png"),
        mask=("mask.png", mask_bytes, "image/png"),
        prompt="a boat on the lake",
        **kwargs,
    )


def test_a_masked_edit_repaints_the_transparent_part_and_keeps_the_rest(stack, client):
    picture = _picture()
    result = _edit(client, picture, _mask(), extra_body={"seed": 3})

    # No size: the image's own (96x48 fits the tiny model's 64x64 default area when rounded).
    assert result.size == "96x48" and result.background == "opaque"
    edited, source = _decoded(result.data[0].b64_json), np.asarray(picture)
    assert edited.shape == (48, 96, 3)
    assert np.array_equal(edited[:, 48:], source[:, 48:])  # outside the mask: the input's own pixels
    assert np.abs(edited[:, :48].astype(int) - source[:, :48]).mean() > 10  # inside: repainted

    # The job records which input is the mask (and the strength), so a retry runs the same edit.
    engine = create_engine(stack.env["DARKROOM_DATABASE_URL"])
    with engine.connect() as connection:
        row = connection.execute(
            Job.__table__.select().where(Job.model == EDIT).order_by(Job.created_at.desc()).limit(1)
        ).one()
    engine.dispose()
    assert (row.params["mask_input"], row.params["strength"], len(row.input_keys)) == (1, 1.0, 2)


def test_strength_and_an_explicit_size_on_a_masked_edit(client):
    picture = _picture(seed=1)
    result = _edit(client, picture, _mask(), size="64x32", extra_body={"strength": 0.5, "seed": 1})
    assert result.size == "64x32"
    edited = _decoded(result.data[0].b64_json)
    kept = np.asarray(picture.resize((64, 32), Image.Resampling.LANCZOS))
    assert edited.shape == (32, 64, 3) and np.array_equal(edited[:, 32:], kept[:, 32:])


BAD_MASKS = [
    ("wrong size", _bytes(_mask((64, 48))), "invalid_mask", "64x48"),
    ("no alpha", _bytes(Image.new("RGB", (96, 48), "black")), "invalid_mask", "no alpha channel"),
    ("grey, no alpha", _bytes(Image.new("L", (96, 48), 0)), "invalid_mask", "no alpha channel"),
    ("opaque", _bytes(_mask(transparent_width=0)), "invalid_mask", "no fully transparent pixel"),
    ("jpeg", _bytes(Image.new("RGB", (96, 48)), "JPEG"), "invalid_image_format", "PNG"),
]


@pytest.mark.parametrize("case,mask,code,says", BAD_MASKS, ids=[case[0] for case in BAD_MASKS])
def test_a_bad_mask_is_a_400_naming_the_mask(client, nothing_written, case, mask, code, says):
    with pytest.raises(openai.BadRequestError) as error:
        _edit(client, _picture(), mask)
    assert (error.value.status_code, error.value.param, error.value.code) == (400, "mask", code)
    assert says in error.value.message


def test_a_mask_with_several_images_is_refused(client, nothing_written):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.edit(
            model=EDIT,
            image=[("a.png", _bytes(_picture()), "image/png"), ("b.png", _bytes(_picture(seed=1)), "image/png")],
            mask=("mask.png", _bytes(_mask()), "image/png"),
            prompt="x",
        )
    assert (error.value.param, error.value.code) == ("mask", "unsupported_parameter")


@pytest.mark.parametrize(
    "extra,mask,param",
    [({"strength": 0.5}, False, "strength"), ({"strength": 0}, True, "strength"), ({"strength": 1.5}, True, "strength")],
)
def test_strength_is_checked(client, nothing_written, extra, mask, param):
    with pytest.raises(openai.BadRequestError) as error:
        if mask:
            _edit(client, _picture(), _mask(), extra_body=extra)
        else:
            client.images.edit(model=EDIT, image=("a.png", _bytes(_picture()), "image/png"), prompt="x", extra_body=extra)
    assert error.value.param == param


def test_a_mask_on_a_generation_model_is_refused(client, nothing_written):
    # Every edit model served here takes masks (the refusal for one that does not is a unit test:
    # tests/unit/api/test_masks.py); a text-to-image model cannot take the edit at all.
    with pytest.raises(openai.BadRequestError) as error:
        client.images.edit(
            model="tiny-qwen-image",
            image=("a.png", _bytes(_picture()), "image/png"),
            mask=("mask.png", _bytes(_mask()), "image/png"),
            prompt="x",
        )
    assert (error.value.param, error.value.code) == ("model", "model_not_supported")


def test_the_models_say_which_take_masks_and_that_none_paints_transparency(client):
    models = {model.id: model.model_extra for model in client.models.list()}
    assert models[EDIT]["mask"] is True and models[EDIT]["defaults"]["strength"] == 1.0
    assert models["tiny-qwen-image"]["mask"] is False and models["tiny-qwen-image"]["defaults"]["strength"] is None
    assert not any(model["transparent_background"] for model in models.values())


# --- size -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size,produced", [("70x50", "64x48"), ("72x40", "80x48"), ("auto", "64x64"), ("8x8", "16x16")])
def test_generation_sizes_are_rounded_to_the_model_multiple_and_reported(client, size, produced):
    result = client.images.generate(model="tiny-qwen-image", prompt="a lighthouse", size=size)
    assert result.size == produced
    height, width = _decoded(result.data[0].b64_json).shape[:2]
    assert f"{width}x{height}" == produced


@pytest.mark.parametrize(
    "image_size,size,produced",
    [((200, 100), "auto", "96x48"), ((200, 100), None, "96x48"), ((40, 120), "auto", "32x112"), ((64, 64), "70x50", "64x48")],
)
def test_edit_sizes_follow_the_first_image_or_are_rounded(client, image_size, size, produced):
    kwargs = {"size": size} if size is not None else {}
    result = client.images.edit(
        model=EDIT, image=("a.png", _bytes(_picture(image_size)), "image/png"), prompt="bluer", **kwargs
    )
    assert result.size == produced
    height, width = _decoded(result.data[0].b64_json).shape[:2]
    assert f"{width}x{height}" == produced


def test_a_size_that_rounds_out_of_range_is_refused_with_the_rule(client, nothing_written):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(model="tiny-qwen-image", prompt="x", size="264x64")
    assert error.value.param == "size"
    assert "rounded to the nearest multiple of 16 (halves up), then between 16 and 256" in error.value.message


# --- background -----------------------------------------------------------------------------


def test_a_transparent_background_is_refused_naming_the_model(client, nothing_written):
    for call in (
        lambda: client.images.generate(model="tiny-qwen-image", prompt="x", background="transparent"),
        lambda: _edit(client, _picture(), _mask(), background="transparent"),
    ):
        with pytest.raises(openai.BadRequestError) as error:
            call()
        assert (error.value.param, error.value.code) == ("background", "unsupported_parameter")
        assert "paints every pixel" in error.value.message and "'tiny-qwen-image" in error.value.message


@pytest.mark.parametrize("background", ["opaque", "auto"])
def test_opaque_and_auto_backgrounds_are_accepted(client, background):
    result = client.images.generate(model="tiny-qwen-image", prompt="x", size="32x32", background=background)
    assert result.background == "opaque"
