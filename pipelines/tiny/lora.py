"""Tiny LoRA adapters for the tiny models, built offline, for the tests and for trying LoRA out.

An adapter is made the way a trainer makes one: peft's `LoraConfig` on the model's transformer,
then the pipeline class's `save_lora_weights`, so the worker loads it through the very path a
real adapter takes. `lora_B` is random rather than peft's zeros, so the adapter changes the output.
"""

from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from pipelines.spec.lora_names import WEIGHT_NAME

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections of Qwen, Wan and FLUX


def build_tiny_lora(
    model_dir: Path,
    target: Path,
    *,
    seed: int = 0,
    rank: int = 4,
    modules: tuple[str, ...] = ATTENTION,
) -> Path:
    """An adapter for the pipeline saved in `model_dir`, written to `target/`; its weights file."""
    index = json.loads((Path(model_dir) / "model_index.json").read_text())
    pipeline_class = getattr(diffusers, index["_class_name"])
    transformer_class = getattr(diffusers, index["transformer"][1])
    config = transformer_class.load_config(Path(model_dir) / "transformer")
    torch.manual_seed(seed)  # the same seed builds the same adapter
    transformer = transformer_class.from_config(config)
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=list(modules), init_lora_weights=False)
    )
    pipeline_class.save_lora_weights(
        target, transformer_lora_layers=get_peft_model_state_dict(transformer)
    )
    return Path(target) / WEIGHT_NAME
