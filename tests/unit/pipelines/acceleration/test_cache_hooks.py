"""Cache policies applied per job through Darkroom's runner: they change the work done, and
leave nothing behind for the next job (SGLang crashed on cache state leaking across shapes)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bench.cache import AttentionCounter
from pipelines.loader import Acceleration, load_runner
from pipelines.spec.cache_policy import FirstBlockCache, TaylorSeer
from pipelines.spec.registry import get_model
from pipelines.spec.types import ImageOutput

TAYLORSEER = TaylorSeer(interval=3, warmup_steps=2, order=1)
FIRST_BLOCK = FirstBlockCache(threshold=0.6)


def pixels(output) -> np.ndarray:
    if isinstance(output, ImageOutput):
        return np.stack([np.asarray(image, dtype=np.int16) for image in output.images])
    return output.frames.astype(np.int16)


def run_counting(runner, request) -> tuple[np.ndarray, int]:
    counter = AttentionCounter(runner.pipeline.transformer)
    try:
        return pixels(runner.run(request)), counter.calls
    finally:
        counter.remove()


def test_taylorseer_skips_attention_and_removing_it_restores_exact_output(t2i_runner, make_request):
    request = make_request("tiny-qwen-image", num_inference_steps=12)
    plain, plain_calls = run_counting(t2i_runner, request)
    cached, cached_calls = run_counting(t2i_runner, replace(request, cache=TAYLORSEER))
    assert cached_calls < plain_calls * 0.7  # computed at steps 0, 1 and every third after
    assert cached.shape == plain.shape and np.abs(cached - plain).max() < 64
    again, again_calls = run_counting(t2i_runner, request)
    assert again_calls == plain_calls and np.array_equal(again, plain)
    assert not t2i_runner.pipeline.transformer.is_cache_enabled


@pytest.mark.parametrize(
    "cache", [FIRST_BLOCK, TAYLORSEER], ids=["first_block_cache", "taylorseer"]
)
def test_cached_jobs_of_different_sizes_back_to_back(t2i_runner, make_request, cache):
    """Cache state shaped for one request must not reach the next one of another size."""
    plain = pixels(
        t2i_runner.run(make_request("tiny-qwen-image", width=64, height=64, num_inference_steps=8))
    )
    for width, height in ((64, 64), (32, 48), (96, 64), (64, 64)):
        request = make_request(
            "tiny-qwen-image", width=width, height=height, num_inference_steps=8, cache=cache
        )
        assert t2i_runner.run(request).images[0].size == (width, height)
    after = pixels(
        t2i_runner.run(make_request("tiny-qwen-image", width=64, height=64, num_inference_steps=8))
    )
    assert np.array_equal(after, plain)


def test_a_failed_job_leaves_no_cache_enabled(t2i_runner, make_request):
    def abort(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt  # what a cancel raises from the step callback, near enough

    request = make_request("tiny-qwen-image", num_inference_steps=6, cache=FIRST_BLOCK)
    with pytest.raises(KeyboardInterrupt):
        t2i_runner.run(request, on_step=abort)
    assert not t2i_runner.pipeline.transformer.is_cache_enabled


def test_wan_taylorseer_hooks_its_attn1_and_attn2(video_runner, make_request):
    """diffusers' default TaylorSeer patterns miss Wan's attention and do nothing silently."""
    request = make_request("tiny-wan", num_inference_steps=8)
    _, plain_calls = run_counting(video_runner, request)
    _, cached_calls = run_counting(
        video_runner, make_request("tiny-wan", num_inference_steps=8, cache=TAYLORSEER)
    )
    assert cached_calls < plain_calls


def test_the_runner_default_is_the_specs_unless_the_operator_set_one(models_dir):
    assert load_runner(get_model("tiny-qwen-image"), models_dir).cache.type == "none"
    runner = load_runner(
        get_model("tiny-qwen-image"),
        models_dir,
        acceleration=Acceleration(cache={"tiny-qwen-image": TaylorSeer()}),
    )
    assert runner.cache == TaylorSeer()


def test_a_cache_and_a_compiled_transformer_are_refused_at_start(models_dir):
    compiled = Acceleration(compile=True, cache={"tiny-qwen-image": TaylorSeer()})
    with pytest.raises(ValueError, match="cannot run on a compiled transformer"):
        load_runner(get_model("tiny-qwen-image"), models_dir, acceleration=compiled)
    # FLUX.1-dev's registry default is MagCache: refused before any weight is looked for.
    with pytest.raises(ValueError, match="black-forest-labs/FLUX.1-dev"):
        load_runner(
            get_model("black-forest-labs/FLUX.1-dev"),
            models_dir,
            acceleration=Acceleration(compile=True),
        )
