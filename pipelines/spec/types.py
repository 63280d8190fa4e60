"""The small typed values that cross the boundary between the worker and the pipelines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipelines.spec.cache_policy import CachePolicy

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# Called after each denoising step with (steps_done, total_steps). It may raise to abort the run:
# diffusers then stops at once without decoding and the pipeline stays reusable.
StepCallback = Callable[[int, int], None]
# Called with (index, image) for each preview a request asked for (pipelines/runners/previews.py);
# it runs inside the denoising loop, so it should only hand the image on.
PreviewCallback = Callable[[int, "Image.Image"], None]


@dataclass(frozen=True)
class LoraWeight:
    """One LoRA adapter a request runs with: its name (spec/lora_names.py) and its scale."""

    path_or_id: str
    scale: float = 1.0


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    width: int
    height: int
    seed: int
    num_inference_steps: int
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    true_cfg_scale: float | None = None
    num_images: int = 1
    num_frames: int | None = None  # video families only
    images: tuple[Image.Image, ...] = ()  # image-edit inputs, RGB
    # An edit's mask as the client sent it (OpenAI's convention: alpha 0 marks what is edited),
    # the size of images[0]; spec/masks.py converts it. None: an unmasked edit.
    mask: Image.Image | None = None
    strength: float | None = None  # masked edits only; None: the model's default
    # The request's own cache policy; None: the runner's default for the model.
    cache: CachePolicy | None = None
    # Previews of the first image to take while it denoises (streamed image requests); 0: none.
    partial_images: int = 0
    # LoRA adapters active for this request only, in order; empty: the base weights.
    lora: tuple[LoraWeight, ...] = ()


@dataclass
class ImageOutput:
    images: list[Image.Image]
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds


@dataclass
class VideoOutput:
    frames: np.ndarray  # (frames, height, width, 3) uint8
    fps: int
    timings: dict[str, float] = field(default_factory=dict)
