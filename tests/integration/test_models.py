"""`GET /v1/models` lists what the deployment serves, with each model's limits and defaults."""

from __future__ import annotations

import openai
import pytest


def test_list_models(client):
    models = {model.id: model for model in client.models.list()}
    assert set(models) == {"tiny-qwen-image", "tiny-qwen-image-edit", "tiny-wan", "tiny-wan-i2v", "tiny-flux"}
    assert models["tiny-wan"].object == "model" and models["tiny-wan"].owned_by == "darkroom"
    assert models["tiny-wan"].model_extra["family"] == "text-to-video"


def test_models_show_their_limits_and_defaults(client):
    models = {model.id: model.model_extra for model in client.models.list()}
    wan, qwen, edit, flux = (models[name] for name in ("tiny-wan", "tiny-qwen-image", "tiny-qwen-image-edit", "tiny-flux"))

    assert wan["sizes"] == {
        "rule": "WIDTHxHEIGHT with each side a multiple of 16 between 16 and 256",
        "default": "64x64",
        "multiple": 16,
        "min_side": 16,
        "max_side": 256,
    }
    assert wan["seconds"]["fps"] == 8 and wan["seconds"]["default"] == "1"
    assert wan["seconds"]["allowed"] == [str(s) for s in range(1, 9)]
    assert wan["seconds"]["frames"]["1"] == 9  # 8 frames rounded up to 4k+1
    assert wan["max_images"] == 1
    assert wan["defaults"] == {
        "num_inference_steps": 4,
        "guidance_scale": 5.0,
        "true_cfg_scale": None,
        "negative_prompt": "low quality",
        "strength": None,  # masked edits only
    }

    assert qwen["seconds"] is None and qwen["max_images"] == 4 and qwen["max_input_images"] == 0
    assert qwen["defaults"]["true_cfg_scale"] == 4.0 and qwen["defaults"]["guidance_scale"] is None
    assert edit["family"] == "image-edit" and edit["max_input_images"] == 3
    assert (edit["mask"], edit["defaults"]["strength"], wan["mask"], qwen["mask"]) == (True, 1.0, False, False)
    assert flux["defaults"]["guidance_scale"] == 3.5 and flux["defaults"]["negative_prompt"] is None
    assert all(model["max_num_inference_steps"] == 200 for model in models.values())

    # Image-to-video: text-to-video's limits, plus the one input image it needs.
    i2v = models["tiny-wan-i2v"]
    assert (i2v["family"], i2v["max_input_images"], i2v["max_images"]) == ("image-to-video", 1, 1)
    assert (i2v["sizes"], i2v["seconds"], i2v["defaults"]) == (wan["sizes"], wan["seconds"], wan["defaults"])


def test_retrieve_model(client):
    model = client.models.retrieve("tiny-qwen-image-edit")
    assert model.id == "tiny-qwen-image-edit"
    assert model.model_extra["sizes"]["default"] == "64x64"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("Qwen/Qwen-Image")  # in the registry, but not served here
