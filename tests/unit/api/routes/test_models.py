"""Per-model limits: what `/v1/models` shows."""

from __future__ import annotations

from api.routes.models import _model
from pipelines.spec.registry import REGISTRY, get_model


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
