"""Masks for edits, in the two conventions that meet here; no torch, so the API can use it too.

OpenAI's `mask` is a PNG the size of the image whose fully transparent pixels (alpha 0) mark where
the image is edited; every other pixel, however transparent, is kept. diffusers' inpainting
pipelines take a one-channel image where white is repainted and black kept. `repaint_area` is the
one place that turns the first into the second.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

REPAINT, KEEP = 255, 0  # diffusers' convention, in an "L" image


def has_alpha(image: Image.Image) -> bool:
    """Whether the image carries transparency: an alpha band, or a PNG transparency chunk (a
    palette or a colour key)."""
    return image.has_transparency_data


def repaint_area(mask: Image.Image) -> Image.Image:
    """The OpenAI mask as diffusers takes it: "L", white where alpha is 0, black elsewhere."""
    if not has_alpha(mask):
        raise ValueError(f"the mask ({mask.mode}) has no alpha channel")
    alpha = np.asarray(mask.convert("RGBA").getchannel("A"))
    return Image.fromarray(np.where(alpha == 0, REPAINT, KEEP).astype(np.uint8), "L")


def edits_anything(area: Image.Image) -> bool:
    """Whether a repaint area (from `repaint_area`) marks at least one pixel."""
    return area.getextrema()[1] == REPAINT


def keep_unmasked(edited: Image.Image, original: Image.Image, area: Image.Image) -> Image.Image:
    """`edited` where `area` is white, `original` elsewhere: the pixels outside the mask exactly as
    the client sent them. Inpainting pipelines blend latents, not pixels, and the VAE round trip
    would otherwise change every kept pixel a little (a tiny model's, a lot).

    `original` and `area` are resized to `edited`'s size first when they differ (the request asked
    for another output size): the image as the pipeline resized it, the area with the nearest
    pixel so it stays black and white.
    """
    size = edited.size
    original = original.convert("RGB")
    if original.size != size:
        original = original.resize(size, Image.Resampling.LANCZOS)
    if area.size != size:
        area = area.resize(size, Image.Resampling.NEAREST)
    return Image.composite(edited.convert("RGB"), original, area)
