"""Previews while denoising, on the tiny pipelines of each family: the size asked for, real
pixel values, the final image untouched, and a predicted clean image that closes in on the final
one step by step (and is the final image at the last step)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.loader import load_runner
from pipelines.runners.image import _edit_vae_image_area
from pipelines.runners.previews import DECODERS, Previews, predicted_clean, preview_steps
from pipelines.spec.registry import get_model

FAMILIES = ["tiny-qwen-image", "tiny-qwen-image-edit", "tiny-flux"]
RED = Image.new("RGB", (64, 48), (200, 30, 30))


@pytest.fixture(scope="module")
def runners(models_dir):
    return {name: load_runner(get_model(name), models_dir) for name in FAMILIES}


def _request(make_request, name: str, **overrides):
    images = (RED,) if get_model(name).max_input_images else ()
    return make_request(name, width=64, height=48, seed=3, images=images, **overrides)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(np.float64)


@pytest.mark.parametrize(
    ("total", "count", "expected"),
    [(4, 1, (2,)), (4, 2, (1, 3)), (4, 3, (1, 2, 3)), (50, 3, (12, 25, 38)), (2, 3, (1, 2)), (1, 3, (1,)), (8, 0, ())],
)
def test_preview_steps_are_evenly_spaced_and_distinct(total, count, expected):
    assert preview_steps(total, count) == expected


def test_predicted_clean_inverts_a_flow_matching_euler_step():
    clean, noise = torch.randn(1, 6, 4), torch.randn(1, 6, 4)
    sigma_in, sigma_out = 0.8, 0.5
    latents_in = (1 - sigma_in) * clean + sigma_in * noise
    latents_out = latents_in + (sigma_out - sigma_in) * (noise - clean)  # the exact velocity
    assert torch.allclose(predicted_clean(latents_in, latents_out, sigma_in, sigma_out), clean, atol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_previews_have_the_requested_size_and_leave_the_final_image_alone(runners, make_request, name):
    runner = runners[name]
    taken: list[tuple[int, Image.Image]] = []
    output = runner.run(
        _request(make_request, name, num_inference_steps=4, partial_images=3),
        on_preview=lambda index, image: taken.append((index, image)),
    )
    assert [index for index, _ in taken] == [0, 1, 2]
    for _, image in taken:
        assert image.size == (64, 48)
        pixels = _pixels(image)
        assert 0 <= pixels.min() and pixels.max() <= 255 and pixels.std() > 1  # an image, not a flat fill
    assert output.timings["previews"] > 0
    plain = runner.run(_request(make_request, name, num_inference_steps=4))
    assert np.array_equal(_pixels(output.images[0]), _pixels(plain.images[0]))
    # Each later preview is closer to the final image.
    final = _pixels(output.images[0])
    distances = [np.abs(_pixels(image) - final).mean() for _, image in taken]
    assert distances == sorted(distances, reverse=True)


@pytest.mark.parametrize("name", FAMILIES)
def test_no_previews_unless_asked_and_taken(runners, make_request, name):
    runner = runners[name]
    taken = []
    output = runner.run(_request(make_request, name), on_preview=lambda index, image: taken.append(index))
    assert taken == [] and "previews" not in output.timings
    # Asked for, but nobody to take them (a follower rank): no decode either.
    output = runner.run(_request(make_request, name, partial_images=2))
    assert "previews" not in output.timings


def _every_step(runner, make_request, name: str, steps: int, clean: bool) -> tuple[list, Image.Image]:
    """Run the pipeline itself with a preview after every step; raw decodes when not `clean`."""
    pipe, request = runner.pipeline, _request(make_request, name, num_inference_steps=steps)
    images: list[Image.Image] = []
    previews = Previews(DECODERS[runner.spec.pipeline_class], tuple(range(1, steps + 1)), 64, 48,
                        lambda index, image: images.append(image))
    if not clean:
        previews._clean = lambda scheduler, latents: latents
    kwargs = {"prompt": request.prompt, "width": 64, "height": 48, "num_inference_steps": steps,
              "generator": torch.Generator().manual_seed(3)}
    if request.negative_prompt is not None:
        kwargs["negative_prompt"] = request.negative_prompt
    if request.images:
        kwargs["image"] = list(request.images)
    hook = pipe.transformer.register_forward_pre_hook(previews.before_transformer, with_kwargs=True)
    try:
        with _edit_vae_image_area(runner.spec.edit_vae_image_area):
            output = pipe(**kwargs, callback_on_step_end=lambda p, i, t, kw: previews.after_step(p, i + 1, kw) or {})
    finally:
        hook.remove()
    return images, output.images[0]


@pytest.mark.parametrize("name", FAMILIES)
def test_the_last_step_preview_is_the_final_image_and_clean_beats_raw(runners, make_request, name):
    clean, final = _every_step(runners[name], make_request, name, 6, clean=True)
    raw, _ = _every_step(runners[name], make_request, name, 6, clean=False)
    final = _pixels(final)
    clean_distances = [np.abs(_pixels(image) - final).mean() for image in clean]
    raw_distances = [np.abs(_pixels(image) - final).mean() for image in raw]
    assert clean_distances[-1] < 0.5  # the same latents, decoded the same way (rounding aside)
    # The predicted clean image is nearer the final one than the noisy latents at every earlier step.
    assert all(c < r for c, r in zip(clean_distances[:-1], raw_distances[:-1], strict=True))
