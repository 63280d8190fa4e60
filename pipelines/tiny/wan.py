"""The tiny Wan 2.1 pipelines, built offline (see pipelines/tiny/): text-to-video, and
image-to-video with the same tokenizer, text encoder and VAE, a transformer that also takes the
image latents and CLIP image features, and a tiny CLIP vision encoder with its image processor."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    UMT5Config,
    UMT5EncoderModel,
)

from pipelines.tiny.text import build_t5_tokenizer, tiny_t5_encoder


def tiny_wan_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],  # 8x spatial, 4x temporal: frames are 4k+1
    )


def tiny_wan_transformer(in_channels: int = 16, image_dim: int | None = None) -> WanTransformer3DModel:
    """The 2-layer Wan transformer; image-to-video's also takes the image latents and features."""
    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=16,
        text_dim=32,  # the text encoder's d_model
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=image_dim,
    )


def build_tiny_wan(target: Path) -> None:
    tokenizer = build_t5_tokenizer()
    vae = tiny_wan_vae()
    text_encoder = tiny_t5_encoder(UMT5EncoderModel, UMT5Config, tokenizer)
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=tiny_wan_transformer(),
    )
    pipe.save_pretrained(target)


_CLIP_HIDDEN_SIZE = 4
_CLIP_IMAGE_SIZE = 32


def build_tiny_wan_i2v(target: Path) -> None:
    tokenizer = build_t5_tokenizer()
    torch.manual_seed(0)
    # Real Wan 2.1 I2V checkpoints ship a CLIPVisionModel (ViT-H); the pipeline feeds its
    # penultimate hidden states to the transformer, whose `image_dim` is their width.
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=_CLIP_HIDDEN_SIZE,
            projection_dim=_CLIP_HIDDEN_SIZE,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=_CLIP_IMAGE_SIZE,
            intermediate_size=16,
            patch_size=8,  # 16 patches + 1 class token: a short image sequence
        )
    ).eval()
    # The PIL backend by name: `CLIPImageProcessor` becomes the torchvision one wherever
    # torchvision is installed, and the saved class would then differ from host to host.
    image_processor = CLIPImageProcessorPil(crop_size=_CLIP_IMAGE_SIZE, size=_CLIP_IMAGE_SIZE)
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_t5_encoder(UMT5EncoderModel, UMT5Config, tokenizer),
        vae=tiny_wan_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        # 16 noise latent channels + 4 first-frame mask channels + 16 image latent channels.
        transformer=tiny_wan_transformer(in_channels=36, image_dim=_CLIP_HIDDEN_SIZE),
        image_encoder=image_encoder,
        image_processor=image_processor,
    )
    pipe.save_pretrained(target)
