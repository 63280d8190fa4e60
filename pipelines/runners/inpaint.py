"""Masked edits: diffusers' inpainting pipeline around the edit pipeline already loaded.

Qwen-Image-Edit-2511 loads as `QwenImageEditPlusPipeline`; `QwenImageEditInpaintPipeline` takes
the same six components (transformer, VAE, text encoder, tokenizer, processor, scheduler), so
`from_pipe` builds it around the very same module objects: no second copy of any weight. Three
narrow adaptations, each checked by a test (tests/unit/pipelines/runners/test_inpaint.py):

1. dtype. `from_pipe` casts every shared module to its `dtype` argument, float32 when none is
   given: on a bfloat16 pipeline that would double the resident weights in place. It is given
   the loaded pipeline's own dtype, and the build fails loudly if any parameter changed dtype.
2. Output size. The inpaint pipeline ignores `width`/`height`: it always works at about 1 MP in
   the input's aspect ratio (`calculate_dimensions(1024 * 1024, ratio)`, a module function). For
   the call that function answers with the requested size, so the output is the size asked for,
   the image and mask are resized to it, and a tiny model's masked edit takes a fraction of a
   second on a CPU instead of a minute (the edit pipeline's VAE area has the same trick).
3. Prompt. The inpaint pipeline comes from the first Qwen-Image-Edit: it encodes `<image>prompt`
   and shows the vision encoder the image at the output size (about 1,300 vision tokens at 1 MP).
   The Plus checkpoints (2509, 2511) are prompted with `Picture 1: <image>prompt` and a condition
   image of about 384x384 (about 190 tokens). `QwenImageEditPlusInpaintPipeline` does the latter,
   so a masked edit's prompt embeddings are the ones an unmasked edit of the same image gets.

The inpaint pipeline blends latents (outside the mask, the input's latents at each step), so the
pixels outside the mask only come back through a VAE round trip; the runner pastes the input's
own pixels back there (pipelines/spec/masks.py `keep_unmasked`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import diffusers
from diffusers import QwenImageEditInpaintPipeline, QwenImageEditPlusPipeline
from diffusers.pipelines.qwenimage import (
    pipeline_qwenimage_edit_inpaint,
    pipeline_qwenimage_edit_plus,
)
from PIL import Image

from pipelines.spec.registry import ModelSpec

# What QwenImageEditPlusPipeline._get_qwen_prompt_embeds puts before the prompt for one image.
_PLUS_ONE_IMAGE = "Picture 1: <|vision_start|><|image_pad|><|vision_end|>"


def build_inpaint_pipeline(spec: ModelSpec, base: Any) -> Any:
    """`spec`'s inpainting pipeline sharing every component of the loaded `base` pipeline."""
    if spec.inpaint_pipeline_class is None:
        raise ValueError(f"{spec.name} takes no mask")
    pipeline_class = getattr(diffusers, spec.inpaint_pipeline_class)
    plus = isinstance(base, QwenImageEditPlusPipeline) and pipeline_class is QwenImageEditInpaintPipeline
    if plus:
        pipeline_class = QwenImageEditPlusInpaintPipeline
    dtypes = _parameter_dtypes(base)
    inpaint = pipeline_class.from_pipe(base, dtype=base.dtype)
    changed = sorted(name for name, dtype in _parameter_dtypes(base).items() if dtypes[name] != dtype)
    if changed:
        names = ", ".join(changed[:5])
        raise RuntimeError(f"building {spec.inpaint_pipeline_class} changed the dtype of {names}")
    if plus:
        inpaint.prompt_template_encode = base.prompt_template_encode.format(_PLUS_ONE_IMAGE + "{}")
        inpaint.prompt_template_encode_start_idx = base.prompt_template_encode_start_idx
    inpaint.set_progress_bar_config(disable=True)
    return inpaint


class QwenImageEditPlusInpaintPipeline(QwenImageEditInpaintPipeline):
    """`QwenImageEditInpaintPipeline` prompting as `QwenImageEditPlusPipeline` does (adaptation 3):
    the vision encoder sees the image at the Plus pipeline's condition area, about 384x384.
    `build_inpaint_pipeline` sets the Plus template on it."""

    def encode_prompt(self, prompt, image=None, *args, **kwargs):
        if isinstance(image, Image.Image):
            width, height = pipeline_qwenimage_edit_plus.calculate_dimensions(
                pipeline_qwenimage_edit_plus.CONDITION_IMAGE_SIZE, image.width / image.height
            )
            image = self.image_processor.resize(image, height, width)
        return super().encode_prompt(prompt, image, *args, **kwargs)


def _parameter_dtypes(pipeline: Any) -> dict[str, Any]:
    return {
        f"{component}.{name}": parameter.dtype
        for component, module in pipeline.components.items()
        if hasattr(module, "named_parameters")
        for name, parameter in module.named_parameters()
    }


@contextmanager
def output_size(inpaint: Any, width: int, height: int) -> Iterator[None]:
    """Make `inpaint` work at `width` x `height` for the duration of a call (adaptation 2).

    The worker runs one job at a time per process, so patching the module for the call is safe.
    """
    if not isinstance(inpaint, QwenImageEditInpaintPipeline):
        yield
        return
    saved = pipeline_qwenimage_edit_inpaint.calculate_dimensions
    pipeline_qwenimage_edit_inpaint.calculate_dimensions = lambda target_area, ratio: (width, height, None)
    try:
        yield
    finally:
        pipeline_qwenimage_edit_inpaint.calculate_dimensions = saved


def steps_run(num_inference_steps: int, strength: float) -> int:
    """The denoising steps an inpaint call makes: with strength < 1 it skips the first ones
    (diffusers' `get_timesteps`), so progress and per-step timings count these."""
    start = int(max(num_inference_steps - min(num_inference_steps * strength, num_inference_steps), 0))
    return num_inference_steps - start
