from __future__ import annotations

import numpy as np
import pytest
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus
from PIL import Image

from pipelines.spec.checks import check_input_image
from pipelines.spec.types import ImageOutput, VideoOutput
from worker.media import encode_mp4, probe_video


def pixels(images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]


def input_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


class Cancelled(Exception):
    pass


# --- text to image --------------------------------------------------------------------------


def test_text_to_image_returns_rgb_images_of_the_requested_size(t2i_runner, make_request):
    output = t2i_runner.run(make_request("tiny-qwen-image", width=80, height=48, num_images=2))

    assert isinstance(output, ImageOutput)
    assert len(output.images) == 2
    for image in output.images:
        assert image.mode == "RGB"
        assert image.size == (80, 48)
    assert {"pipeline", "encode", "denoise", "decode"} <= output.timings.keys()
    assert all(seconds >= 0 for seconds in output.timings.values())


def test_text_to_image_same_seed_same_pixels_other_seed_differs(t2i_runner, make_request):
    first = t2i_runner.run(make_request("tiny-qwen-image", seed=3))
    again = t2i_runner.run(make_request("tiny-qwen-image", seed=3))
    other = t2i_runner.run(make_request("tiny-qwen-image", seed=4))

    assert np.array_equal(pixels(first.images)[0], pixels(again.images)[0])
    assert not np.array_equal(pixels(first.images)[0], pixels(other.images)[0])


def test_on_step_is_called_once_per_step_in_order(t2i_runner, make_request):
    calls: list[tuple[int, int]] = []
    t2i_runner.run(
        make_request("tiny-qwen-image", num_inference_steps=5),
        on_step=lambda d, t: calls.append((d, t)),
    )

    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_exception_from_on_step_aborts_and_runner_stays_usable(t2i_runner, make_request):
    request = make_request("tiny-qwen-image", seed=11)
    expected = t2i_runner.run(request)
    calls: list[int] = []

    def cancel_at_two(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        t2i_runner.run(request, on_step=cancel_at_two)
    assert calls == [1, 2]  # no step ran after the exception

    after = t2i_runner.run(request)
    assert np.array_equal(pixels(after.images)[0], pixels(expected.images)[0])


# --- image edit -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes", [[(64, 64)], [(64, 64), (96, 48)], [(32, 32), (48, 80), (64, 64)]]
)
def test_edit_with_one_to_three_inputs(edit_runner, make_request, sizes):
    images = tuple(input_image(w, h, seed) for seed, (w, h) in enumerate(sizes))
    steps: list[int] = []
    output = edit_runner.run(
        make_request("tiny-qwen-image-edit", images=images, width=64, height=48),
        on_step=lambda done, total: steps.append(done),
    )

    assert isinstance(output, ImageOutput)
    assert [image.size for image in output.images] == [(64, 48)]
    assert output.images[0].mode == "RGB"
    assert steps == [1, 2, 3, 4]


def test_edit_is_deterministic_and_depends_on_the_input(edit_runner, make_request):
    one = (input_image(64, 64, 0),)
    first = edit_runner.run(make_request("tiny-qwen-image-edit", images=one, num_images=2))
    again = edit_runner.run(make_request("tiny-qwen-image-edit", images=one, num_images=2))
    other_input = edit_runner.run(
        make_request("tiny-qwen-image-edit", images=(input_image(64, 64, 1),), num_images=2)
    )

    assert len(first.images) == 2
    assert all(np.array_equal(a, b) for a, b in zip(pixels(first.images), pixels(again.images)))
    assert not np.array_equal(pixels(first.images)[0], pixels(other_input.images)[0])


def test_edit_restores_the_vae_image_size_even_when_aborted(edit_runner, make_request):
    original = pipeline_qwenimage_edit_plus.VAE_IMAGE_SIZE
    seen: list[int] = []

    def look_then_cancel(done: int, total: int) -> None:
        seen.append(pipeline_qwenimage_edit_plus.VAE_IMAGE_SIZE)
        raise Cancelled

    with pytest.raises(Cancelled):
        edit_runner.run(
            make_request("tiny-qwen-image-edit", images=(input_image(64, 64, 0),)),
            on_step=look_then_cancel,
        )
    assert seen == [edit_runner.spec.edit_vae_image_area]
    assert pipeline_qwenimage_edit_plus.VAE_IMAGE_SIZE == original


@pytest.mark.parametrize("size", [(16, 256), (256, 16)])
def test_an_edit_runs_on_the_most_elongated_image_the_api_accepts(edit_runner, make_request, size):
    spec = edit_runner.spec
    assert max(size) == spec.size.max_aspect_ratio * min(size)
    check_input_image(spec, "image", *size)  # what the API checks: accepted
    output = edit_runner.run(make_request(spec.name, images=(input_image(*size, 0),)))
    assert output.images[0].size == spec.size.default


@pytest.mark.parametrize("count", [0, 4])
def test_edit_refuses_a_wrong_number_of_inputs(edit_runner, make_request, count):
    images = tuple(input_image(32, 32, seed) for seed in range(count))
    with pytest.raises(ValueError, match="1 to 3 input images"):
        edit_runner.run(make_request("tiny-qwen-image-edit", images=images))


# --- text to video --------------------------------------------------------------------------


def test_video_frames_shape_fps_and_mp4_round_trip(video_runner, make_request):
    calls: list[tuple[int, int]] = []
    output = video_runner.run(
        make_request("tiny-wan", num_frames=33, width=64, height=48),
        on_step=lambda done, total: calls.append((done, total)),
    )

    assert isinstance(output, VideoOutput)
    assert output.frames.shape == (33, 48, 64, 3)
    assert output.frames.dtype == np.uint8
    assert output.fps == 8
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]

    info = probe_video(encode_mp4(output.frames, output.fps))
    assert info.codec == "h264"
    assert (info.width, info.height) == (64, 48)
    assert info.frames == 33
    assert info.fps == 8
    assert info.faststart


def test_video_same_seed_same_frames_other_seed_differs(video_runner, make_request):
    first = video_runner.run(make_request("tiny-wan", seed=1))
    again = video_runner.run(make_request("tiny-wan", seed=1))
    other = video_runner.run(make_request("tiny-wan", seed=2))

    assert first.frames.shape == (9, 64, 64, 3)  # 1 s at 8 fps, rounded up to 4k+1
    assert np.array_equal(first.frames, again.frames)
    assert not np.array_equal(first.frames, other.frames)


def test_video_abort_then_reuse(video_runner, make_request):
    request = make_request("tiny-wan", seed=5)
    expected = video_runner.run(request)

    def cancel(done: int, total: int) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        video_runner.run(request, on_step=cancel)
    assert np.array_equal(video_runner.run(request).frames, expected.frames)


def test_video_refuses_more_than_one_video(video_runner, make_request):
    with pytest.raises(ValueError, match="one video per request"):
        video_runner.run(make_request("tiny-wan", num_images=2))
