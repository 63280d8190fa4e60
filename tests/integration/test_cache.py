"""Per-request cache policies (`extra_body={"cache": {...}}`) through the live stack: checked
against the model at submit, applied by the worker for that job only."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from tests.integration.conftest import KEY_A

TAYLORSEER = {"type": "taylorseer", "interval": 3, "warmup_steps": 1, "order": 1}


def image_size(result) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).size


@pytest.mark.parametrize(
    "model,cache,param,code",
    [
        ("tiny-qwen-image", {"type": "pyramid_attention_broadcast"}, "cache", "invalid_value"),
        ("tiny-qwen-image", {"type": "first_block_cache", "threshold": 5}, "cache.first_block_cache.threshold", "invalid_value"),
        ("tiny-qwen-image", {"type": "taylorseer", "every": 2}, "cache.taylorseer.every", "unknown_parameter"),
        ("tiny-qwen-image", {"type": "magcache"}, "cache", "unsupported_parameter"),
    ],
)
def test_bad_cache_policies_are_refused(client, model, cache, param, code):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(model=model, prompt="x", size="32x32", extra_body={"cache": cache})
    assert (error.value.status_code, error.value.param, error.value.code) == (400, param, code)
    assert error.value.body["message"]


def test_cached_jobs_of_different_sizes_run_back_to_back(client):
    """Cache state made for one job's shape must not reach the next job (SGLang's crash)."""
    for size in ("64x64", "32x48", "96x32"):
        result = client.images.generate(
            model="tiny-qwen-image", prompt="a fox", size=size,
            extra_body={"seed": 3, "num_inference_steps": 8, "cache": TAYLORSEER},
        )  # fmt: skip
        assert image_size(result) == tuple(int(side) for side in size.split("x"))


def test_a_cache_changes_the_work_not_the_request_shape(client):
    plain = client.images.generate(
        model="tiny-flux", prompt="a lighthouse", size="64x64", extra_body={"seed": 9, "num_inference_steps": 12}
    )
    cached = client.images.generate(
        model="tiny-flux", prompt="a lighthouse", size="64x64",
        extra_body={"seed": 9, "num_inference_steps": 12, "cache": {"type": "magcache", "threshold": 0.5}},
    )  # fmt: skip
    assert image_size(cached) == image_size(plain) == (64, 64)
    assert cached.data[0].b64_json != plain.data[0].b64_json  # steps were skipped


def test_a_video_job_with_first_block_cache_completes(client):
    video = client.videos.create_and_poll(
        model="tiny-wan", prompt="waves", size="32x32", seconds="1",
        extra_body={"cache": {"type": "first_block_cache", "threshold": 0.3}},
    )  # fmt: skip
    assert video.status == "completed", video.error


def test_a_compiling_deployment_refuses_cache_policies(stack, spawn_api):
    base_url = spawn_api({"DARKROOM_COMPILE_TRANSFORMER": "true"})
    client = openai.OpenAI(base_url=base_url, api_key=KEY_A)
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(model="tiny-qwen-image", prompt="x", extra_body={"cache": TAYLORSEER})
    assert (error.value.param, error.value.code) == ("cache", "unsupported_parameter")
    assert "compiles" in error.value.body["message"]
