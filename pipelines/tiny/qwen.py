"""The tiny Qwen-Image pipelines (text-to-image and edit), built offline: a byte-level BPE
tokenizer like Qwen's, trained on the shared corpus, and a small Qwen2.5-VL text encoder that knows
its special tokens' ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPlusPipeline,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
)

from pipelines import processor_compat
from pipelines.tiny.text import CORPUS

# Qwen's special tokens in the order the real tokenizer numbers them. The text encoder's config
# must carry this tokenizer's ids for them (the edit pipeline finds `<|image_pad|>` by id).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

_QWEN_VOCAB_SIZE = 512


def build_qwen_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE (like Qwen's) trained on `CORPUS`, with Qwen's special tokens.

    The Qwen pipelines drop the first 34 (text-to-image) or 64 (edit) tokens of the encoded
    template: its system part under the real tokenizer. With this small vocabulary that part is
    42 and 90 tokens long, so the user's prompt always survives the cut.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_QWEN_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab = dict(state["vocab"])
    # Specials go after the learned vocabulary, in Qwen's order, so their ids are fixed.
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[tuple(pair) for pair in state["merges"]],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS),
    )


def _qwen_transformer() -> QwenImageTransformer2DModel:
    torch.manual_seed(0)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,  # 4 latent channels packed 2x2
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,  # the text encoder's hidden size
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )


def _qwen_vae() -> AutoencoderKLQwenImage:
    torch.manual_seed(0)
    z_dim = 4
    # Three spatial downsamplings like the real VAE (diffusers' test uses two): a scale factor of
    # 8 makes the pipelines' size multiple 16, as the registry and the real checkpoints have it.
    return AutoencoderKLQwenImage(
        base_dim=z_dim * 6,
        z_dim=z_dim,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )


def _qwen_text_encoder(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLForConditionalGeneration:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": len(tokenizer),
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def build_tiny_qwen_image(target: Path) -> None:
    tokenizer = build_qwen_tokenizer()
    pipe = QwenImagePipeline(
        transformer=_qwen_transformer(),
        vae=_qwen_vae(),
        text_encoder=_qwen_text_encoder(tokenizer),
        tokenizer=tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    pipe.save_pretrained(target)


def build_tiny_qwen_image_edit(target: Path) -> None:
    tokenizer = build_qwen_tokenizer()
    processor = processor_compat.build_processor(
        tokenizer,
        # The real processor allows ~12.8 MP; a small cap keeps the vision tokens per input
        # image (and so the text encoder's sequence) short for a tiny model.
        max_pixels=112 * 112,
    )
    pipe = QwenImageEditPlusPipeline(
        transformer=_qwen_transformer(),
        vae=_qwen_vae(),
        text_encoder=_qwen_text_encoder(tokenizer),
        tokenizer=tokenizer,
        processor=processor,
        scheduler=FlowMatchEulerDiscreteScheduler(),
    )
    pipe.save_pretrained(target)
    # Rewrite processor/ in the layout real Qwen-Image-Edit checkpoints have (processor_compat.py).
    processor_compat.save_pipeline_processor(processor, target)
