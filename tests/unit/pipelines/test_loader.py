from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from PIL import Image

from pipelines import processor_compat
from pipelines.loader import ModelNotAvailableError, resolve_model_path
from pipelines.spec.registry import get_model
from pipelines.tiny.qwen import build_qwen_tokenizer


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_real_model_missing_everywhere_names_both_places(tmp_path, empty_hf_cache):
    with pytest.raises(ModelNotAvailableError) as caught:
        resolve_model_path(get_model("Qwen/Qwen-Image"), tmp_path / "models")
    message = str(caught.value)
    assert str(tmp_path / "models" / "Qwen" / "Qwen-Image") in message
    assert f"Hugging Face cache ({empty_hf_cache})" in message


def test_real_model_in_models_dir_is_used(tmp_path, empty_hf_cache):
    local = tmp_path / "Wan-AI" / "Wan2.1-T2V-1.3B-Diffusers"
    local.mkdir(parents=True)
    assert resolve_model_path(get_model("Wan-AI/Wan2.1-T2V-1.3B-Diffusers"), tmp_path) == local


def test_tiny_model_is_built_on_first_resolve(models_dir):
    path = resolve_model_path(get_model("tiny-qwen-image"), models_dir)
    assert path == models_dir / "tiny-qwen-image"
    assert (path / "model_index.json").is_file()


def test_loaded_tiny_pipelines_use_the_spec_dtype(t2i_runner, video_runner):
    assert t2i_runner.pipeline.transformer.dtype == torch.float32
    assert video_runner.pipeline.text_encoder.dtype == torch.float32


@pytest.mark.skipif(
    processor_compat.torchvision_available(),
    reason="the adaptation is for hosts without torchvision",
)
def test_edit_pipeline_gets_the_image_only_processor_without_torchvision(edit_runner):
    assert isinstance(edit_runner.pipeline.processor, processor_compat.Qwen2VLImageOnlyProcessor)


def test_tiny_edit_processor_is_stored_like_a_real_checkpoint(edit_runner, models_dir):
    model_dir = models_dir / "tiny-qwen-image-edit"
    index = json.loads((model_dir / "model_index.json").read_text())
    config = json.loads((model_dir / "processor" / "preprocessor_config.json").read_text())

    assert index["processor"] == ["transformers", "Qwen2VLProcessor"]
    assert config["processor_class"] == "Qwen2VLProcessor"
    assert config["image_processor_type"] == "Qwen2VLImageProcessor"


def test_load_processor_reads_the_real_checkpoint_layout(tmp_path):
    # The layout of Qwen/Qwen-Image-Edit-2511's processor/ folder (with our tiny tokenizer).
    directory = tmp_path / "processor"
    build_qwen_tokenizer().save_pretrained(directory)
    vision = {
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "processor_class": "Qwen2VLProcessor",
    }
    (directory / "preprocessor_config.json").write_text(
        json.dumps({**vision, "image_processor_type": "Qwen2VLImageProcessor"})
    )
    (directory / "video_preprocessor_config.json").write_text(
        json.dumps({**vision, "video_processor_type": "Qwen2VLVideoProcessor"})
    )

    processor = processor_compat.load_processor(tmp_path)
    inputs = processor(
        text=["Picture 1: <|vision_start|><|image_pad|><|vision_end|>make it blue"],
        images=[Image.new("RGB", (56, 56))],
        return_tensors="pt",
    )

    # 56x56 pixels -> 4x4 patches of 14 -> 2x2 merged tokens replace the one <|image_pad|>.
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]]
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (inputs["input_ids"] == image_pad).sum().item() == 4
