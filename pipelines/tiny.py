"""Tiny, randomly initialised pipelines of the real diffusers classes, built offline.

Each builder makes the same component classes a real checkpoint has (with the small shapes from
diffusers' own `get_dummy_components` tests), seeds torch so every build is identical, and writes
the pipeline with `save_pretrained`. The worker then loads it with the very `from_pretrained`
path real weights use. diffusers' tests fetch tokenizers and a T5 config from the Hub; here the
tokenizers are trained locally on a few sentences instead, so nothing touches the network.

Outputs are noise: these models exist to exercise the plumbing (shapes, seeds, callbacks,
encoding) in seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImageEditPlusPipeline,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from filelock import FileLock
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    T5Tokenizer,
)

from pipelines import processor_compat

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

# Training text: the pipelines' own prompt templates (specials removed) and a few prompts, so
# the prompts the tests and templates use tokenize into sensible pieces.
_CORPUS = (
    (
        "Describe the image by detailing the color, shape, size, texture, quantity, text, "
        "spatial relationships of the objects and background:"
    ),
    (
        "Describe the key features of the input image (color, shape, size, texture, objects, "
        "background), then explain how the user's text instruction should alter or modify the "
        "image. Generate a new image that meets the user's requirements while maintaining "
        "consistency with the original input where appropriate."
    ),
    "system\nuser\nassistant\nPicture 1: Picture 2: Picture 3: ",
    "A red fox sitting in the snow at sunset, photograph.",
    "A cat walking on the grass, cinematic video, low quality, blurred details.",
    "Make the sky purple and add a small boat on the lake.",
    "Bright tones, overexposed, static, worst quality, ugly, deformed, messy background.",
    "0123456789 !?.,:;'\"()[]{}<>-_+=*/\\|@#$%^&~`",
)
_QWEN_VOCAB_SIZE = 512


def build_qwen_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE (like Qwen's) trained on `_CORPUS`, with Qwen's special tokens.

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
    bpe.train_from_iterator(_CORPUS, trainer)
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


def build_t5_tokenizer() -> T5Tokenizer:
    """A Unigram tokenizer for UMT5: specials, every corpus character, then whole words."""
    pieces: dict[str, float] = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -2.0}
    # Every printable ASCII character, so English text never falls back to <unk>.
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces.setdefault(char, -5.0)
    for word in sorted({word for line in _CORPUS for word in line.split()}):
        pieces.setdefault("▁" + word, -3.0)
    return T5Tokenizer(vocab=list(pieces.items()), extra_ids=100)


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
    # Rewrite processor/ in the layout real Qwen-Image-Edit checkpoints have (see the module).
    processor_compat.save_pipeline_processor(processor, target)


def tiny_t5_encoder(model_class, config_class, tokenizer):
    """The 2-layer T5-family text encoder of the tiny Wan (UMT5) and FLUX (T5) pipelines."""
    torch.manual_seed(0)
    return model_class(
        config_class(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=32,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    ).eval()


# Imported on use: these modules import this one for the corpus, tokenizers and Wan parts.
def _build_tiny_flux(target: Path) -> None:
    from pipelines.tiny_flux import build_tiny_flux

    build_tiny_flux(target)


def _build_tiny_wan(target: Path) -> None:
    from pipelines.tiny_wan import build_tiny_wan

    build_tiny_wan(target)


def _build_tiny_wan_i2v(target: Path) -> None:
    from pipelines.tiny_wan import build_tiny_wan_i2v

    build_tiny_wan_i2v(target)


TINY_BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny-qwen-image": build_tiny_qwen_image,
    "tiny-qwen-image-edit": build_tiny_qwen_image_edit,
    "tiny-wan": _build_tiny_wan,
    "tiny-wan-i2v": _build_tiny_wan_i2v,
    "tiny-flux": _build_tiny_flux,
}


def build_tiny_model(name: str, target: Path) -> None:
    """Build tiny model `name` into directory `target`, unless it is already there.

    The build goes to a temporary directory beside `target` and is renamed into place, so a
    half-built model never exists at `target`; a file lock makes concurrent callers (several
    worker processes starting at once) build it once and the others wait and reuse it.
    """
    if name not in TINY_BUILDERS:
        raise KeyError(f"no tiny builder named {name!r}; known: {', '.join(sorted(TINY_BUILDERS))}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if target.exists():
            return
        # Holding the lock, any staging directory left here is from a build that crashed.
        for stale in target.parent.glob(f".{target.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
        try:
            # Fork the RNG so building does not disturb the caller's global torch seed.
            with torch.random.fork_rng(devices=[]):
                TINY_BUILDERS[name](staging)
            staging.chmod(0o755)  # mkdtemp makes it private to this user
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
