"""Masked edits on the tiny Qwen-Image-Edit: the inpainting pipeline shares the loaded weights,
honours the requested size, prompts as the Plus pipeline does, and keeps the unmasked pixels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditInpaintPipeline,
    QwenImageTransformer2DModel,
)
from diffusers.pipelines.qwenimage import (
    pipeline_qwenimage_edit_inpaint,
    pipeline_qwenimage_edit_plus,
)
from PIL import Image

from pipelines.loader import load_pipeline
from pipelines.runners.image import ImageEditRunner
from pipelines.runners.inpaint import build_inpaint_pipeline, steps_run
from pipelines.spec.registry import get_model

EDIT = "tiny-qwen-image-edit"


def input_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def mask_left(width: int, height: int, masked_width: int) -> Image.Image:
    """OpenAI's convention: the transparent left `masked_width` columns are edited."""
    mask = Image.new("RGBA", (width, height), (255, 255, 255, 255))
    mask.paste((0, 0, 0, 0), (0, 0, masked_width, height))
    return mask


class Cancelled(Exception):
    pass


def test_the_inpainting_pipeline_shares_every_loaded_component(edit_runner):
    base, inpaint = edit_runner.pipeline, edit_runner.inpaint
    assert isinstance(inpaint, QwenImageEditInpaintPipeline)
    assert set(inpaint.components) == set(base.components) == {
        "transformer", "vae", "text_encoder", "tokenizer", "processor", "scheduler"
    }
    for name, component in base.components.items():
        assert inpaint.components[name] is component, name
    # The same tensors, not equal copies.
    assert inpaint.transformer.proj_out.weight.data_ptr() == base.transformer.proj_out.weight.data_ptr()


def test_building_it_keeps_the_loaded_dtype(models_dir):
    spec = dataclasses.replace(get_model(EDIT), dtype="bfloat16")
    # diffusers' from_pipe casts the shared modules to float32 unless told otherwise.
    base = load_pipeline(spec, models_dir)
    QwenImageEditInpaintPipeline.from_pipe(base)
    assert base.transformer.dtype == torch.float32

    base = load_pipeline(spec, models_dir)
    inpaint = build_inpaint_pipeline(spec, base)
    assert base.transformer.dtype == base.text_encoder.dtype == base.vae.dtype == torch.bfloat16
    assert inpaint.transformer is base.transformer


@pytest.mark.parametrize("size", [(64, 64), (96, 48)])
def test_prompts_are_encoded_as_the_plus_pipeline_encodes_them(edit_runner, size):
    image = input_image(*size, 0)
    base = edit_runner.pipeline
    # What QwenImageEditPlusPipeline.__call__ gives encode_prompt: the image at its condition area.
    width, height = pipeline_qwenimage_edit_plus.calculate_dimensions(
        pipeline_qwenimage_edit_plus.CONDITION_IMAGE_SIZE, size[0] / size[1]
    )
    condition = base.image_processor.resize(image, height, width)
    plus, _ = base.encode_prompt("make the sky purple", image=[condition], device="cpu")
    masked, _ = edit_runner.inpaint.encode_prompt("make the sky purple", image=image, device="cpu")
    assert torch.equal(plus, masked)
    # Without the adaptation: the first Qwen-Image-Edit's template and the image as given.
    stock = QwenImageEditInpaintPipeline.from_pipe(base, dtype=base.dtype)
    unadapted, _ = stock.encode_prompt("make the sky purple", image=image, device="cpu")
    assert unadapted.shape != plus.shape or not torch.equal(unadapted, plus)


def test_a_masked_edit_repaints_the_transparent_area_and_keeps_the_rest_exactly(edit_runner, make_request):
    image = input_image(96, 48, 0)
    steps: list[tuple[int, int]] = []
    request = make_request(EDIT, images=(image,), mask=mask_left(96, 48, 48), width=96, height=48, num_images=2)
    output = edit_runner.run(request, on_step=lambda done, total: steps.append((done, total)))

    assert [result.size for result in output.images] == [(96, 48), (96, 48)]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    source = np.asarray(image)
    for result in map(np.asarray, output.images):
        assert np.array_equal(result[:, 48:], source[:, 48:])  # outside the mask: the input's pixels
        assert np.abs(result[:, :48].astype(int) - source[:, :48]).mean() > 10  # inside: repainted
    again = edit_runner.run(request)
    assert all(np.array_equal(a, b) for a, b in zip(map(np.asarray, output.images), map(np.asarray, again.images)))


def test_a_masked_edit_at_another_size_keeps_the_resized_input(edit_runner, make_request):
    image = input_image(96, 48, 1)
    output = edit_runner.run(make_request(EDIT, images=(image,), mask=mask_left(96, 48, 48), width=64, height=32))
    assert output.images[0].size == (64, 32)
    kept = np.asarray(image.resize((64, 32), Image.Resampling.LANCZOS))
    assert np.array_equal(np.asarray(output.images[0])[:, 32:], kept[:, 32:])


def test_strength_runs_fewer_steps_and_changes_the_result(edit_runner, make_request):
    image, mask = input_image(64, 64, 2), mask_left(64, 64, 32)
    steps: list[tuple[int, int]] = []
    half = edit_runner.run(
        make_request(EDIT, images=(image,), mask=mask, strength=0.5),
        on_step=lambda done, total: steps.append((done, total)),
    )
    full = edit_runner.run(make_request(EDIT, images=(image,), mask=mask))
    assert steps == [(1, 2), (2, 2)] and steps_run(4, 0.5) == 2
    assert not np.array_equal(np.asarray(half.images[0]), np.asarray(full.images[0]))


@pytest.mark.parametrize("steps,strength", [(4, 1.0), (4, 0.6), (4, 0.01), (40, 0.6), (3, 0.5), (50, 0.33)])
def test_steps_run_follows_diffusers_get_timesteps(edit_runner, steps, strength):
    base = edit_runner.pipeline
    # A scheduler of its own: get_timesteps sets the begin index on the one it is given.
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(base.scheduler.config)
    stock = QwenImageEditInpaintPipeline.from_pipe(base, scheduler=scheduler, dtype=base.dtype)
    scheduler.set_timesteps(steps)
    assert steps_run(steps, strength) == stock.get_timesteps(steps, strength, "cpu")[1]


def test_an_unmasked_edit_is_unchanged_by_a_masked_one_before_it(edit_runner, make_request):
    request = make_request(EDIT, images=(input_image(64, 64, 3),))
    before = edit_runner.run(request)
    edit_runner.run(dataclasses.replace(request, mask=mask_left(64, 64, 16), strength=0.5))
    after = edit_runner.run(request)
    assert np.array_equal(np.asarray(before.images[0]), np.asarray(after.images[0]))


def test_the_size_patch_is_restored_even_when_aborted(edit_runner, make_request):
    original = pipeline_qwenimage_edit_inpaint.calculate_dimensions

    def cancel(done: int, total: int) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        edit_runner.run(make_request(EDIT, images=(input_image(64, 64, 0),), mask=mask_left(64, 64, 8)), on_step=cancel)
    assert pipeline_qwenimage_edit_inpaint.calculate_dimensions is original


def test_a_mask_needs_one_image_of_its_size(edit_runner, make_request):
    mask = mask_left(64, 64, 32)
    with pytest.raises(ValueError, match="one input image"):
        edit_runner.run(make_request(EDIT, images=(input_image(64, 64, 0),) * 2, mask=mask))
    with pytest.raises(ValueError, match="must match"):
        edit_runner.run(make_request(EDIT, images=(input_image(32, 64, 0),), mask=mask))


def test_a_masked_edit_runs_on_a_transformer_with_2511s_zero_cond_t(models_dir, make_request):
    # Qwen-Image-Edit-2511's transformer config sets zero_cond_t (the reference image's tokens are
    # modulated at timestep 0); the tiny model's does not. The same weights with it on:
    spec = get_model(EDIT)
    base = load_pipeline(spec, models_dir)
    transformer = QwenImageTransformer2DModel.from_config({**base.transformer.config, "zero_cond_t": True})
    transformer.load_state_dict(base.transformer.state_dict())
    base.register_modules(transformer=transformer)
    runner = ImageEditRunner(spec, base)
    assert runner.inpaint.transformer is transformer and transformer.zero_cond_t

    image = input_image(64, 48, 4)
    output = runner.run(make_request(EDIT, images=(image,), mask=mask_left(64, 48, 32), width=64, height=48, num_images=2))
    assert [result.size for result in output.images] == [(64, 48), (64, 48)]
    assert all(np.array_equal(np.asarray(result)[:, 32:], np.asarray(image)[:, 32:]) for result in output.images)
