"""The text side the tiny models share: a corpus to train their tokenizers on, the T5 tokenizer
(UMT5's for Wan, T5's for FLUX) and the small T5-family text encoder. Trained locally so nothing
touches the network; the Qwen and CLIP tokenizers are trained on the same corpus (qwen.py, flux.py).
"""

from __future__ import annotations

import string

import torch
from transformers import T5Tokenizer

# Training text: the pipelines' own prompt templates (specials removed) and a few prompts, so
# the prompts the tests and templates use tokenize into sensible pieces.
CORPUS = (
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


def build_t5_tokenizer() -> T5Tokenizer:
    """A Unigram tokenizer for UMT5: specials, every corpus character, then whole words."""
    pieces: dict[str, float] = {"<pad>": 0.0, "</s>": 0.0, "<unk>": 0.0, "▁": -2.0}
    # Every printable ASCII character, so English text never falls back to <unk>.
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces.setdefault(char, -5.0)
    for word in sorted({word for line in CORPUS for word in line.split()}):
        pieces.setdefault("▁" + word, -3.0)
    return T5Tokenizer(vocab=list(pieces.items()), extra_ids=100)


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
