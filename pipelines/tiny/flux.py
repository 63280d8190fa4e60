"""A tiny, randomly initialised FLUX.1 pipeline (`tiny-flux`), built offline (see pipelines/tiny/).

Shapes follow diffusers' own FluxPipeline `get_dummy_components`, except the VAE: four blocks
instead of one give it FLUX's real 8x downsampling, so sides are multiples of 16 as for
FLUX.1-dev. diffusers' test fetches its CLIP and T5 tokenizers from the Hub; here the CLIP BPE
is trained on the shared corpus and the T5 tokenizer is the shared one (text.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
)
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

from pipelines.tiny.text import CORPUS, build_t5_tokenizer, tiny_t5_encoder

_CLIP_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_CLIP_VOCAB_SIZE = 400
# CLIP's fixed context; FluxPipeline pads and truncates the CLIP prompt to this.
_CLIP_MAX_LENGTH = 77
_LATENT_CHANNELS = 4


def build_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE trained on the shared corpus, with CLIP's two special tokens."""
    # CLIP's BPE marks the last piece of a word with `</w>`; train with the same suffix so those
    # pieces exist in the vocabulary.
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_CLIP_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab = dict(state["vocab"])
    for token in _CLIP_SPECIALS:
        vocab[token] = len(vocab)
    return CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(pair) for pair in state["merges"]],
        model_max_length=_CLIP_MAX_LENGTH,
    )


def build_tiny_flux(target: Path) -> None:
    clip_tokenizer = build_clip_tokenizer()
    t5_tokenizer = build_t5_tokenizer()
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=_LATENT_CHANNELS * 4,  # latents packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # the T5 encoder's d_model
        pooled_projection_dim=32,  # the CLIP encoder's hidden size
        guidance_embeds=True,  # FLUX.1-dev is guidance-distilled: guidance_scale is an input
        axes_dims_rope=[4, 4, 8],
    )
    torch.manual_seed(0)
    clip = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=clip_tokenizer.bos_token_id,
            eos_token_id=clip_tokenizer.eos_token_id,
            pad_token_id=clip_tokenizer.pad_token_id,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(clip_tokenizer),
            max_position_embeddings=_CLIP_MAX_LENGTH,
            projection_dim=32,
        )
    ).eval()
    t5 = tiny_t5_encoder(T5EncoderModel, T5Config, t5_tokenizer)
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        latent_channels=_LATENT_CHANNELS,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(target)
