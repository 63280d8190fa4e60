"""Previews of an image while it denoises (`partial_images` on a streamed image request).

After a chosen step, the latents are turned into a picture with the pipeline's own VAE. What is
decoded is the clean image the model currently predicts, not the noisy latents themselves: the
families here denoise by flow matching (x_t = (1 - sigma) x0 + sigma noise, and the transformer
predicts the velocity noise - x0), so one Euler step from sigma_in to sigma_out gives
velocity = (x_out - x_in) / (sigma_out - sigma_in) and x0 = x_out - sigma_out * velocity. A raw
decode of x_out after the first steps is mostly noise; the predicted x0 already shows the
composition, and at the last step (sigma_out = 0) it is exactly the final latents. The step
callback only receives the latents after the step, so `Previews` also keeps a reference to the
latents the transformer was called with (a forward pre-hook; no copy).

Each family packs and normalises latents its own way, so there is one decode function per family,
copied from the pipeline's own decode stage. A preview costs one VAE decode on the accelerator,
paid only by jobs that asked for previews.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from PIL import Image

from pipelines.spec.types import PreviewCallback

# (pipeline, clean packed latents, width, height) -> the preview image.
Decoder = Callable[[Any, torch.Tensor, int, int], Image.Image]


def preview_steps(total_steps: int, count: int) -> tuple[int, ...]:
    """The steps (1-based) after which `count` previews are taken: evenly spaced, after steps
    round(N * (i + 1) / (count + 1)), so none falls on the last step (whose picture is the final
    image itself). With fewer steps than previews two would fall on one step; each step gives one
    preview, so such a request gets fewer previews than it asked for."""
    return tuple(sorted({max(1, round(total_steps * (i + 1) / (count + 1))) for i in range(count)}))


def predicted_clean(
    latents_in: torch.Tensor, latents_out: torch.Tensor, sigma_in: float, sigma_out: float
) -> torch.Tensor:
    """The clean latents a flow-matching Euler step from sigma_in to sigma_out implies."""
    if sigma_out == sigma_in:
        return latents_out
    velocity = (latents_out.float() - latents_in.float()) / (sigma_out - sigma_in)
    return latents_out.float() - sigma_out * velocity


@torch.inference_mode()
def decode_qwen_image(pipe: Any, latents: torch.Tensor, width: int, height: int) -> Image.Image:
    """QwenImagePipeline and QwenImageEditPlusPipeline: 2x2 packed tokens of a video VAE's
    latents, normalised by per-channel mean and std (their decode stage, for the first image)."""
    vae = pipe.vae
    latents = pipe._unpack_latents(latents[:1], height, width, pipe.vae_scale_factor).to(vae.dtype)
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
    std = torch.tensor(vae.config.latents_std).view(shape).to(latents)
    image = vae.decode(latents * std + mean, return_dict=False)[0][:, :, 0]  # the one frame
    return pipe.image_processor.postprocess(image, output_type="pil")[0]


@torch.inference_mode()
def decode_flux(pipe: Any, latents: torch.Tensor, width: int, height: int) -> Image.Image:
    """FluxPipeline: 2x2 packed tokens of an image VAE's latents, scaled and shifted."""
    vae = pipe.vae
    latents = pipe._unpack_latents(latents[:1], height, width, pipe.vae_scale_factor)
    latents = latents / vae.config.scaling_factor + vae.config.shift_factor
    image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")[0]


DECODERS: dict[str, Decoder] = {
    "QwenImagePipeline": decode_qwen_image,
    "QwenImageEditPlusPipeline": decode_qwen_image,
    "FluxPipeline": decode_flux,
}


class Previews:
    """Takes one pipeline call's previews: `before_transformer` is a forward pre-hook (with
    kwargs) on the transformer, `after_step` runs in the step callback; each preview goes to
    `on_preview(index, image)`, with indices 0, 1, ... in step order."""

    def __init__(
        self, decode: Decoder, steps: tuple[int, ...], width: int, height: int, on_preview: PreviewCallback
    ) -> None:
        self.decode = decode
        self.steps = steps
        self.width = width
        self.height = height
        self.on_preview = on_preview
        self.taken = 0
        self.seconds = 0.0  # decode time, for the job's timings
        self._latents_in: torch.Tensor | None = None

    def before_transformer(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        # Called once per transformer forward (twice a step with true CFG, the same latents).
        self._latents_in = kwargs.get("hidden_states", args[0] if args else None)

    def after_step(self, pipe: Any, step: int, callback_kwargs: dict) -> None:
        if step not in self.steps:
            return
        started = time.perf_counter()
        latents = callback_kwargs["latents"]
        clean = self._clean(pipe.scheduler, latents)
        image = self.decode(pipe, clean, self.width, self.height)
        self.seconds += time.perf_counter() - started
        self.on_preview(self.taken, image)
        self.taken += 1

    def _clean(self, scheduler: Any, latents: torch.Tensor) -> torch.Tensor:
        """The predicted clean latents; the noisy latents themselves where that cannot be known."""
        latents_in = self._latents_in
        deterministic_euler = isinstance(scheduler, FlowMatchEulerDiscreteScheduler) and not getattr(
            scheduler.config, "stochastic_sampling", False
        )
        if not deterministic_euler or latents_in is None or scheduler.step_index is None:
            return latents
        # The edit pipeline appends its input images' tokens after the latents.
        latents_in = latents_in[:, : latents.shape[1]]
        if latents_in.shape != latents.shape:
            return latents
        index = scheduler.step_index  # already advanced past this step
        sigma_in, sigma_out = float(scheduler.sigmas[index - 1]), float(scheduler.sigmas[index])
        return predicted_clean(latents_in, latents, sigma_in, sigma_out)
