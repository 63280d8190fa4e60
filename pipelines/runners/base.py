"""Run one generation request through a loaded diffusers pipeline: what every family shares.

One runner per family. Each `run` reads top to bottom: build the pipeline's keyword arguments
from the request, call the pipeline with a step callback, turn its output into our result type.
What they share (seeding, the step callback, stage timings, cache, LoRA, previews) is in
`Runner`, here; the image families are in `image.py`, the video ones in `video.py`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from typing import Any

import torch

from pipelines.acceleration.cache_hooks import Policy, cache_enabled, diffusers_cache_config
from pipelines.acceleration.cfg_parallel import cfg_split, makes_two_passes
from pipelines.runners.lora import LoraAdapters
from pipelines.runners.previews import DECODERS, Previews, preview_steps
from pipelines.spec.lora_names import LORA_UNSUPPORTED, LoraError
from pipelines.spec.registry import ModelSpec
from pipelines.spec.types import GenerationRequest, LoraWeight, PreviewCallback, StepCallback


class _StageClock:
    """Times one pipeline call by stage and forwards step progress to `on_step`.

    encode:  call start -> first transformer forward (prompt encoding, input images, latents)
    denoise: first transformer forward -> last step callback
    decode:  last step callback -> call end (VAE decode and post-processing)
    """

    def __init__(self, total_steps: int, on_step: StepCallback | None, previews: Previews | None = None) -> None:
        self.total_steps = total_steps
        self.on_step = on_step
        self.previews = previews
        self.started = time.perf_counter()
        self.first_forward: float | None = None
        self.last_step: float | None = None

    def before_transformer(self, module: torch.nn.Module, args: tuple) -> None:
        if self.first_forward is None:
            self.first_forward = time.perf_counter()

    def step_end(self, pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        self.last_step = time.perf_counter()
        if self.on_step is not None:
            # An exception here propagates out of the pipeline: diffusers stops at once, skips
            # decoding, and the pipeline stays reusable. This is how a job is cancelled.
            self.on_step(step_index + 1, self.total_steps)
        if self.previews is not None:
            self.previews.after_step(pipe, step_index + 1, callback_kwargs)
        return {}

    def timings(self) -> dict[str, float]:
        ended = time.perf_counter()
        first = self.first_forward or self.started
        last = self.last_step or first
        timings = {
            "pipeline": ended - self.started,
            "encode": first - self.started,
            "denoise": last - first,
            "denoise_per_step": (last - first) / self.total_steps,
            "decode": ended - last,
        }
        if self.previews is not None:
            timings["previews"] = self.previews.seconds  # decoded within the denoise stage
        return timings


class Runner:
    """Holds a loaded pipeline; `run` turns a request into an output."""

    def __init__(
        self,
        spec: ModelSpec,
        pipeline: Any,
        cache: Policy | None = None,
        loras: LoraAdapters | None = None,
    ) -> None:
        self.spec = spec
        self.pipeline = pipeline
        self.cache = cache if cache is not None else spec.cache  # for requests that name none
        self.loras = loras  # the adapters loaded into this pipeline; None: it takes none

    def run(
        self,
        request: GenerationRequest,
        on_step: StepCallback | None = None,
        on_preview: PreviewCallback | None = None,
    ) -> Any:
        raise NotImplementedError

    def _generator(self, seed: int) -> torch.Generator:
        # The execution device, not `pipeline.device`: with offload the weights rest on the CPU
        # while the noise must come from the device the denoising runs on, as without offload.
        return torch.Generator(device=self.pipeline._execution_device).manual_seed(seed)

    def _call(
        self,
        kwargs: dict[str, Any],
        request: GenerationRequest,
        on_step: StepCallback | None,
        on_preview: PreviewCallback | None = None,
        pipeline: Any = None,
        steps: int | None = None,
    ) -> tuple[Any, dict[str, float]]:
        """Call the pipeline (or `pipeline`, sharing its transformer) with the request's LoRA
        adapters and cache, timing its stages and taking the previews it asked for; `steps`: the
        steps it runs when not all requested (an inpaint's strength). Adapters, cache and hooks are
        undone after the call, whatever happens. Returns (pipeline output, timings)."""
        pipeline = pipeline if pipeline is not None else self.pipeline
        # Whether this worker can run the request's cache and adapters was checked before the run
        # (pipelines/spec/checks.py), and its default cache when the model loaded.
        policy = request.cache if request.cache is not None else self.cache
        steps = steps if steps is not None else request.num_inference_steps
        cache = diffusers_cache_config(policy, self.spec, steps)
        previews = self._previews(request, on_preview, steps)
        transformer = pipeline.transformer
        with ExitStack() as stack:
            started = time.perf_counter()
            stack.enter_context(self._lora_active(request.lora))  # loads what is not loaded yet
            lora_s = time.perf_counter() - started
            clock = _StageClock(steps, on_step, previews)
            stack.callback(transformer.register_forward_pre_hook(clock.before_transformer).remove)
            if previews is not None:
                hook = transformer.register_forward_pre_hook(previews.before_transformer, with_kwargs=True)
                stack.callback(hook.remove)
            stack.enter_context(cache_enabled(transformer, cache))
            stack.enter_context(cfg_split(transformer, makes_two_passes(self.spec, request)))
            output = pipeline(**kwargs, callback_on_step_end=clock.step_end)
        timings = clock.timings()
        if request.lora:
            timings["lora"] = lora_s
        return output, timings

    def prepare_lora(self, loras: Sequence[LoraWeight]) -> None:
        """Find and load the request's adapters now, without running anything: a sharded group's
        rank 0 does this before handing the job out, so a bad adapter fails it on one rank."""
        if loras:
            self._lora_adapters().prepare(loras)

    def _lora_active(self, loras: Sequence[LoraWeight]):
        return self._lora_adapters().active(loras) if loras else nullcontext()

    def _lora_adapters(self) -> LoraAdapters:
        if self.loras is None:
            raise LoraError(LORA_UNSUPPORTED, f"The model {self.spec.name} takes no LoRA adapters on this worker.")
        return self.loras

    def _previews(self, request: GenerationRequest, on_preview: PreviewCallback | None, steps: int) -> Previews | None:
        """Previews only when asked for and someone takes them: each costs a VAE decode."""
        if not request.partial_images or on_preview is None:
            return None
        decode = DECODERS.get(self.spec.pipeline_class)
        if decode is None:
            raise ValueError(f"{self.spec.name} cannot make previews (partial_images)")
        return Previews(decode, preview_steps(steps, request.partial_images), request.width, request.height, on_preview)


def common_kwargs(request: GenerationRequest, generator: torch.Generator) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "prompt": request.prompt,
        "width": request.width,
        "height": request.height,
        "num_inference_steps": request.num_inference_steps,
        "generator": generator,
    }
    # The caller has applied the model's defaults: a None here means "not used by this request".
    if request.negative_prompt is not None:
        kwargs["negative_prompt"] = request.negative_prompt
    return kwargs
