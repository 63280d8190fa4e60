"""`GET /v1/models` lists what the deployment serves."""

from __future__ import annotations

import openai
import pytest


def test_list_models(client):
    models = {model.id: model for model in client.models.list()}
    assert set(models) == {"tiny-qwen-image", "tiny-qwen-image-edit", "tiny-wan"}
    assert models["tiny-wan"].object == "model" and models["tiny-wan"].owned_by == "darkroom"
    assert models["tiny-wan"].model_extra["family"] == "text-to-video"


def test_retrieve_model(client):
    assert client.models.retrieve("tiny-qwen-image-edit").id == "tiny-qwen-image-edit"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("Qwen/Qwen-Image")  # in the registry, but not served here
