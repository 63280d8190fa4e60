"""The tiny Wan image-to-video pipeline through its runner: a video of the requested size and
frame count from one input image, deterministic per seed, steered by the image; the image is
brought to the video size by covering it and cropping the centre; per-component dtypes load."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.loader import component_dtypes, load_pipeline
from pipelines.runners.video import cover_and_center_crop
from pipelines.spec.registry import get_model
from pipelines.spec.types import VideoOutput


def bands(width: int, height: int, colours: list[tuple[int, int, int]], *, vertical: bool) -> Image.Image:
    """Equal stripes of `colours`, top to bottom (vertical) or left to right."""
    image = Image.new("RGB", (width, height))
    count = len(colours)
    for index, colour in enumerate(colours):
        if vertical:
            box = (0, index * height // count, width, (index + 1) * height // count)
        else:
            box = (index * width // count, 0, (index + 1) * width // count, height)
        image.paste(colour, box)
    return image


ROOT = Path(__file__).resolve().parents[4]
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def test_a_portrait_image_in_a_landscape_video_keeps_its_centre_unsquashed():
    portrait = bands(60, 180, [RED, GREEN, BLUE], vertical=True)  # three 60x60 squares
    frame = cover_and_center_crop(portrait, 64, 32)
    assert frame.size == (64, 32) and frame.mode == "RGB"
    # Scaled to 64 wide the middle square is 64x64: the 32-row crop lies inside it, all green.
    assert np.abs(np.asarray(frame).astype(int) - GREEN).max() <= 2


def test_a_wide_image_in_a_square_video_loses_its_sides():
    wide = bands(300, 100, [RED, GREEN, BLUE], vertical=False)
    frame = np.asarray(cover_and_center_crop(wide, 48, 48))
    # Scaled to 48 high the bands are 48 wide: the crop is the green one (Lanczos blurs its edges).
    assert frame[:, :, 1].min() > 200 and frame[:, :, [0, 2]].max() < 30
    exact = cover_and_center_crop(Image.new("RGBA", (64, 32), (1, 2, 3, 0)), 64, 32)
    assert exact.mode == "RGB" and exact.getpixel((0, 0)) == (1, 2, 3)


_PEAK_GROWTH_OF_A_CROP = """
import resource
from PIL import Image
from pipelines.runners.video import cover_and_center_crop
thin = Image.new("RGB", (1, 60000), "red")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
frame = cover_and_center_crop(thin, 32, 32)
assert frame.size == (32, 32) and frame.getpixel((16, 16)) == (255, 0, 0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_thin_image_costs_the_memory_of_the_frame_not_of_itself_scaled_up():
    # Scaled whole before the crop, a 1x60000 image covering 32x32 was a 32x1,920,000 image
    # (184 MB; 124 GB for an 832x480 video). Measured in a fresh process: its peak RSS, in KiB.
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_GROWTH_OF_A_CROP], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert int(result.stdout) < 16 * 1024, f"the crop grew the process by {int(result.stdout) // 1024} MiB"


def test_image_to_video_returns_frames_of_the_requested_size(i2v_runner, make_request):
    image = bands(40, 100, [RED, BLUE], vertical=True)
    output = i2v_runner.run(make_request("tiny-wan-i2v", width=64, height=32, num_frames=5, images=(image,)))
    assert isinstance(output, VideoOutput)
    assert (output.frames.shape, output.frames.dtype, output.fps) == ((5, 32, 64, 3), np.uint8, 8)
    assert {"pipeline", "encode", "denoise", "decode"} <= output.timings.keys()


def test_same_seed_and_image_same_video_another_image_another_video(i2v_runner, make_request):
    red, blue = Image.new("RGB", (64, 64), RED), Image.new("RGB", (64, 64), BLUE)
    first = i2v_runner.run(make_request("tiny-wan-i2v", seed=3, images=(red,)))
    again = i2v_runner.run(make_request("tiny-wan-i2v", seed=3, images=(red,)))
    other_image = i2v_runner.run(make_request("tiny-wan-i2v", seed=3, images=(blue,)))
    assert np.array_equal(first.frames, again.frames)
    assert not np.array_equal(first.frames, other_image.frames)


@pytest.mark.parametrize("count", [0, 2])
def test_image_to_video_needs_exactly_one_image(i2v_runner, make_request, count):
    images = tuple(Image.new("RGB", (64, 64)) for _ in range(count))
    with pytest.raises(ValueError, match="exactly 1 input image"):
        i2v_runner.run(make_request("tiny-wan-i2v", images=images))


def test_float32_components_load_in_float32_beside_a_lower_precision_rest(models_dir, i2v_runner):
    # The real checkpoints' recipe on the tiny model: transformer bfloat16, VAE and encoder float32.
    spec = dataclasses.replace(get_model("tiny-wan-i2v"), dtype="bfloat16", float32_components=("vae", "image_encoder"))
    assert component_dtypes(spec) == {"default": torch.bfloat16, "vae": torch.float32, "image_encoder": torch.float32}
    assert component_dtypes(get_model("tiny-wan")) == torch.float32
    pipeline = load_pipeline(spec, models_dir)
    assert (pipeline.transformer.dtype, pipeline.text_encoder.dtype) == (torch.bfloat16, torch.bfloat16)
    assert (pipeline.vae.dtype, pipeline.image_encoder.dtype) == (torch.float32, torch.float32)
