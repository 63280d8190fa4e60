"""Tiny models built once per test session, and runners loaded once from them.

The runners load through `load_runner`: the same `from_pretrained` path real weights take.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.loader import load_runner
from pipelines.runners.base import Runner
from pipelines.spec.registry import get_model
from pipelines.spec.types import GenerationRequest


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def t2i_runner(models_dir: Path) -> Runner:
    return load_runner(get_model("tiny-qwen-image"), models_dir)


@pytest.fixture(scope="session")
def edit_runner(models_dir: Path) -> Runner:
    return load_runner(get_model("tiny-qwen-image-edit"), models_dir)


@pytest.fixture(scope="session")
def video_runner(models_dir: Path) -> Runner:
    return load_runner(get_model("tiny-wan"), models_dir)


@pytest.fixture(scope="session")
def i2v_runner(models_dir: Path) -> Runner:
    return load_runner(get_model("tiny-wan-i2v"), models_dir)


@pytest.fixture(scope="session")
def make_request():
    """`make_request(model, **overrides)`: a request with the model's defaults applied."""
    return _make_request


def _make_request(model: str, **overrides) -> GenerationRequest:
    spec = get_model(model)
    width, height = spec.size.default
    fields = {
        "prompt": "a red fox sitting in the snow",
        "width": width,
        "height": height,
        "seed": 7,
        "num_inference_steps": spec.steps,
        "negative_prompt": spec.negative_prompt,
        "guidance_scale": spec.guidance_scale,
        "true_cfg_scale": spec.true_cfg_scale,
    }
    if spec.frames is not None:
        fields["num_frames"] = spec.frames.frames_for(spec.frames.default_seconds)
    fields.update(overrides)
    return GenerationRequest(**fields)
