"""Per-model limits: what `/v1/models` shows, and how extension parameters are checked."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from api.errors import APIError
from api.routes.models import _model
from api.submission import generation_params
from darkroom.settings import Settings
from pipelines.spec.registry import REGISTRY, get_model

SETTINGS = Settings()


def body(**fields):
    values = {
        "prompt": "a fox", "seed": 1, "num_inference_steps": None, "negative_prompt": None,
        "guidance_scale": None, "true_cfg_scale": None, "cache": None, "lora": None,
    } | fields
    return SimpleNamespace(**values)


def test_a_video_model_shows_its_sizes_seconds_and_defaults():
    shown = _model(get_model("Wan-AI/Wan2.2-TI2V-5B-Diffusers"), created=5).model_dump()
    assert shown["object"] == "model" and shown["created"] == 5 and shown["owned_by"] == "Wan-AI"
    assert shown["family"] == "text-to-video"
    assert shown["sizes"] == {
        "rule": "WIDTHxHEIGHT with each side a multiple of 32 between 256 and 1280",
        "default": "1280x704",
        "multiple": 32,
        "min_side": 256,
        "max_side": 1280,
    }
    assert shown["seconds"]["allowed"] == ["1", "2", "3", "4", "5"]
    assert (shown["seconds"]["default"], shown["seconds"]["fps"]) == ("5", 24)
    assert shown["seconds"]["frames"]["5"] == 121
    assert shown["defaults"]["num_inference_steps"] == 50 and shown["defaults"]["guidance_scale"] == 5.0
    assert shown["defaults"]["true_cfg_scale"] is None
    assert shown["max_images"] == 1 and shown["max_input_images"] == 0


def test_every_entry_can_be_shown():
    for spec in REGISTRY.values():
        shown = _model(spec, created=0)
        assert (shown.seconds is None) == (spec.frames is None)
        assert shown.max_num_inference_steps == spec.max_steps


def test_defaults_fill_in_what_the_request_leaves_out():
    params = generation_params(SETTINGS, get_model("tiny-qwen-image"), body(), 64, 64)
    assert (params["num_inference_steps"], params["true_cfg_scale"], params["negative_prompt"]) == (4, 4.0, " ")
    assert params["guidance_scale"] is None


def test_a_scale_the_model_has_is_taken_from_the_request():
    params = generation_params(SETTINGS, get_model("tiny-flux"), body(guidance_scale=7.0), 64, 64)
    assert params["guidance_scale"] == 7.0


@pytest.mark.parametrize(
    "model,fields,param,code",
    [
        ("tiny-flux", {"true_cfg_scale": 4.0}, "true_cfg_scale", "unsupported_parameter"),
        ("tiny-wan", {"true_cfg_scale": 4.0}, "true_cfg_scale", "unsupported_parameter"),
        ("tiny-qwen-image", {"guidance_scale": 4.0}, "guidance_scale", "unsupported_parameter"),
        ("tiny-flux", {"negative_prompt": "blurry"}, "negative_prompt", "unsupported_parameter"),
        ("Wan-AI/Wan2.1-T2V-14B-Diffusers", {"num_inference_steps": 101}, "num_inference_steps", "invalid_value"),
    ],
)
def test_what_a_model_cannot_take_is_refused_naming_the_param(model, fields, param, code):
    with pytest.raises(APIError) as error:
        generation_params(SETTINGS, get_model(model), body(**fields), 64, 64)
    assert (error.value.status, error.value.param, error.value.code) == (400, param, code)
    assert model in error.value.message
