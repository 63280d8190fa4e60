"""The image families' runners: text-to-image, and image edits (with a mask: inpainting).

They share `Runner`'s call (cache, LoRA, timings, previews) with the video families.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus

from pipelines.runners.base import Runner, common_kwargs
from pipelines.runners.inpaint import build_inpaint_pipeline, output_size, steps_run
from pipelines.spec.masks import keep_unmasked, repaint_area
from pipelines.spec.registry import ModelSpec
from pipelines.spec.types import GenerationRequest, ImageOutput, PreviewCallback, StepCallback


def _rgb_images(images: list, request: GenerationRequest) -> list:
    result = [image.convert("RGB") for image in images]
    for image in result:
        if image.size != (request.width, request.height):
            raise RuntimeError(
                f"pipeline returned a {image.size[0]}x{image.size[1]} image for a "
                f"{request.width}x{request.height} request"
            )
    return result


def _image_kwargs(request: GenerationRequest, generator: torch.Generator) -> dict[str, Any]:
    """What both image families pass their pipeline: the common arguments, the image count, and
    whichever guidance scales the request sets."""
    kwargs = common_kwargs(request, generator)
    kwargs["num_images_per_prompt"] = request.num_images
    if request.true_cfg_scale is not None:
        kwargs["true_cfg_scale"] = request.true_cfg_scale
    if request.guidance_scale is not None:
        kwargs["guidance_scale"] = request.guidance_scale
    return kwargs


class TextToImageRunner(Runner):
    def run(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        on_preview: PreviewCallback | None = None,
    ) -> ImageOutput:
        kwargs = _image_kwargs(request, self._generator(request.seed))
        output, timings = self._call(kwargs, request, on_step, on_preview)
        return ImageOutput(images=_rgb_images(output.images, request), timings=timings)


@contextmanager
def _edit_vae_image_area(area: int | None) -> Iterator[None]:
    """Set the edit pipeline's VAE input area (a module constant) for the duration of a call.

    `QwenImageEditPlusPipeline` resizes every input image to `VAE_IMAGE_SIZE` (about 1 MP) before
    encoding it with the VAE, whatever the output size. For a tiny model that turns a 0.2 s edit
    into a minute on a CPU, so its spec asks for a smaller area. The worker runs one job at a
    time per process, so patching the module for the call is safe.
    """
    if area is None:
        yield
        return
    saved = pipeline_qwenimage_edit_plus.VAE_IMAGE_SIZE
    pipeline_qwenimage_edit_plus.VAE_IMAGE_SIZE = area
    try:
        yield
    finally:
        pipeline_qwenimage_edit_plus.VAE_IMAGE_SIZE = saved


class ImageEditRunner(Runner):
    def __init__(self, spec: ModelSpec, pipeline: Any, **options: Any) -> None:
        super().__init__(spec, pipeline, **options)
        # Masked edits: the inpainting pipeline around the same loaded components (no copy).
        self.inpaint = build_inpaint_pipeline(spec, pipeline) if spec.inpaint_pipeline_class else None

    def run(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        on_preview: PreviewCallback | None = None,
    ) -> ImageOutput:
        if not 1 <= len(request.images) <= self.spec.max_input_images:
            raise ValueError(
                f"{self.spec.name} edits 1 to {self.spec.max_input_images} input images, "
                f"got {len(request.images)}"
            )
        kwargs = _image_kwargs(request, self._generator(request.seed))
        kwargs["image"] = [image.convert("RGB") for image in request.images]
        if request.mask is not None:
            return self._run_masked(kwargs, request, on_step, on_preview)

        with _edit_vae_image_area(self.spec.edit_vae_image_area):
            output, timings = self._call(kwargs, request, on_step, on_preview)
        return ImageOutput(images=_rgb_images(output.images, request), timings=timings)

    def _run_masked(
        self,
        kwargs: dict[str, Any],
        request: GenerationRequest,
        on_step: StepCallback | None,
        on_preview: PreviewCallback | None,
    ) -> ImageOutput:
        """The inpainting pipeline repaints where the mask is transparent; the input's own pixels
        are pasted back everywhere else (inpaint.py says why)."""
        if self.inpaint is None:
            raise ValueError(f"{self.spec.name} takes no mask")
        if len(request.images) != 1:
            raise ValueError(f"a mask applies to one input image, got {len(request.images)}")
        image = kwargs["image"][0]
        if request.mask.size != image.size:
            raise ValueError(f"the mask is {request.mask.size}, the image {image.size}: they must match")
        area = repaint_area(request.mask)
        strength = request.strength if request.strength is not None else self.spec.strength
        kwargs.update(image=image, mask_image=area, strength=strength)
        with output_size(self.inpaint, request.width, request.height):
            output, timings = self._call(
                kwargs,
                request,
                on_step,
                on_preview,
                pipeline=self.inpaint,
                steps=steps_run(request.num_inference_steps, strength),
            )
        edited = [keep_unmasked(result, image, area) for result in _rgb_images(output.images, request)]
        return ImageOutput(images=edited, timings=timings)
