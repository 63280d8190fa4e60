"""tiny-flux through the text-to-image runner: FluxPipeline takes the runner's arguments."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.loader import load_runner
from pipelines.runners.image import TextToImageRunner
from pipelines.spec.registry import get_model


@pytest.fixture(scope="module")
def flux_runner(models_dir):
    return load_runner(get_model("tiny-flux"), models_dir)


def test_flux_loads_as_a_text_to_image_runner(flux_runner):
    assert isinstance(flux_runner, TextToImageRunner)
    assert type(flux_runner.pipeline).__name__ == "FluxPipeline"


def test_flux_images_have_the_requested_size_and_count(flux_runner, make_request):
    steps = []
    output = flux_runner.run(
        make_request("tiny-flux", width=80, height=48, num_images=2),
        on_step=lambda done, total: steps.append((done, total)),
    )
    assert [image.size for image in output.images] == [(80, 48), (80, 48)]
    assert all(image.mode == "RGB" for image in output.images)
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_flux_same_seed_same_pixels_and_guidance_matters(flux_runner, make_request):
    first = flux_runner.run(make_request("tiny-flux", seed=3))
    again = flux_runner.run(make_request("tiny-flux", seed=3))
    other_guidance = flux_runner.run(make_request("tiny-flux", seed=3, guidance_scale=7.0))
    pixels = [np.asarray(result.images[0]) for result in (first, again, other_guidance)]
    assert np.array_equal(pixels[0], pixels[1])
    assert not np.array_equal(pixels[0], pixels[2])
