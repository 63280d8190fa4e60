"""Every rule about a job's parameters, against its model and the deployment that runs it, each
written once. Torch-free, so every process can call it:

- the API, when it accepts a job (`check_params`, and `check_input_image` for each input image):
  a refusal is a 400 naming the field;
- the worker, before it runs one (`check_params` again, with its own deployment): a job accepted
  under other settings fails with the reason instead of running something else than was asked;
- the worker at start-up and the settings when they load, for each model's default cache
  (`check_cache`): a deployment that could not run its own defaults refuses to start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.spec.cache_policy import CachePolicy
from pipelines.spec.lora_names import LORA_UNSUPPORTED
from pipelines.spec.params import JobParams
from pipelines.spec.registry import ModelSpec
from pipelines.spec.types import LoraWeight


@dataclass(frozen=True)
class Deployment:
    """What the processes that run the jobs are, as far as the rules below care."""

    compiled: bool = False  # DARKROOM_COMPILE_TRANSFORMER
    sharded: bool = False  # each transformer's sequence is split over a group of ranks
    lora_max_per_request: int = 4


class ParamRefused(ValueError):
    """A parameter this model or deployment cannot run. `param` is the request's field, `code` the
    API's error code, `job_code` what a job refused on the worker fails with."""

    def __init__(
        self, param: str, message: str, *, code: str = "unsupported_parameter", job_code: str = "parameter_unsupported"
    ) -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code
        self.job_code = job_code


def check_params(spec: ModelSpec, params: JobParams, deployment: Deployment) -> None:
    """Refuse, with the first reason, parameters that `spec` on `deployment` cannot run."""
    if params.num_images > spec.max_images:
        raise ParamRefused(
            "n", f"The model '{spec.name}' makes at most {spec.max_images} images per request.", code="invalid_value"
        )
    if params.partial_images and not spec.traits.previews:
        raise ParamRefused("partial_images", f"The model '{spec.name}' cannot make partial images; send partial_images 0.")
    if params.num_inference_steps > spec.max_steps:
        raise ParamRefused(
            "num_inference_steps",
            f"num_inference_steps {params.num_inference_steps} is over the most the model '{spec.name}' allows "
            f"({spec.max_steps}).",
            code="invalid_value",
        )
    if params.negative_prompt is not None and spec.negative_prompt is None:
        raise ParamRefused(
            "negative_prompt",
            f"The model '{spec.name}' takes no negative_prompt: it runs without classifier-free guidance.",
        )
    for knob in ("guidance_scale", "true_cfg_scale"):
        if getattr(params, knob) is not None and getattr(spec, knob) is None:
            raise ParamRefused(knob, f"The model '{spec.name}' has no {knob}.")
    if params.cache is not None:
        check_cache(spec, params.cache, deployment)
    check_lora(spec, params.lora, deployment)
    if params.strength is not None and params.mask_input is None:
        raise ParamRefused("strength", "strength applies to masked edits only: send a mask with it.")


def check_input_image(spec: ModelSpec, field: str, width: int, height: int) -> None:
    """Whether `spec` can use an input image of this shape (an edit's image, whose mask is its
    size; a video's input_reference): no more elongated than `SizeRule.max_aspect_ratio`."""
    limit = spec.size.max_aspect_ratio
    if max(width, height) > limit * min(width, height):
        raise ParamRefused(
            field,
            f"The image is {width}x{height} pixels, too elongated for the model '{spec.name}': it uses images "
            f"whose long side is at most {limit:.4g} times the short side. Crop it closer to the output's shape.",
            code="invalid_image_dimensions",
            job_code="invalid_image_dimensions",
        )


def check_cache(spec: ModelSpec, policy: CachePolicy, deployment: Deployment) -> None:
    """Whether `spec` can run with `policy` here: a request's own, or a model's default."""
    if policy.type == "magcache" and spec.mag_ratios is None:
        raise ParamRefused(
            "cache",
            f"The model '{spec.name}' has no calibrated MagCache ratios; use first_block_cache, taylorseer or none.",
            job_code="cache_unsupported",
        )
    if deployment.compiled and policy.type != "none":
        # Measured on an H200 (full-size Qwen-Image, 50 steps, bench/full_size.py): diffusers' cache
        # hooks keep Python state (step counters, the hooks themselves) that dynamo guards on, so
        # every job recompiles until the recompile limit and then runs partly eager: compiled + first
        # block cache took 18.7 s and compiled + TaylorSeer 13.2 s against 7.0 s compiled alone, and
        # compiled runs without a cache after them slowed to 8.6 s. Refused rather than dropped.
        raise ParamRefused(
            "cache",
            f"This deployment compiles the transformer of '{spec.name}' (DARKROOM_COMPILE_TRANSFORMER), and cache "
            f"policy {policy.type!r} cannot run on a compiled transformer: diffusers' cache hooks force a recompile "
            'on every job, so the two do not combine. Send no cache, or {"type": "none"}; an operator sets the '
            f'model\'s cache to none in DARKROOM_MODEL_CACHE (e.g. {{"{spec.name}": {{"type": "none"}}}}) or '
            "turns compile off.",
            job_code="cache_unsupported",
        )
    if deployment.sharded and policy.type == "first_block_cache":
        # TaylorSeer and MagCache decide from the step index alone, the same on every rank.
        raise ParamRefused(
            "cache",
            f"This worker runs '{spec.name}' sharded, and a first-block cache decides to skip from the first "
            "block's output, which each rank sees only a shard of: ranks could disagree and deadlock in a "
            "collective. Use taylorseer, magcache or none.",
            job_code="cache_unsupported_sharded",
        )


def check_lora(spec: ModelSpec, adapters: Sequence[LoraWeight], deployment: Deployment) -> None:
    """Whether `spec` can take `adapters` here. Whether each exists and fits the model only the
    worker's disk can tell: that fails the job (`lora_not_found`, ...)."""
    if not adapters:
        return
    if not spec.traits.takes_lora:
        raise ParamRefused("lora", f"The model '{spec.name}' takes no LoRA adapters.", job_code=LORA_UNSUPPORTED)
    if deployment.compiled:
        # Loading an adapter wraps the compiled layers, and each job's set would recompile them.
        raise ParamRefused(
            "lora",
            f"This deployment compiles the transformer of '{spec.name}' (DARKROOM_COMPILE_TRANSFORMER), and a "
            "LoRA adapter would force a recompile on every job; send no lora.",
            job_code=LORA_UNSUPPORTED,
        )
    if len(adapters) > deployment.lora_max_per_request:
        raise ParamRefused(
            "lora",
            f"{len(adapters)} LoRA adapters requested; at most {deployment.lora_max_per_request} per request.",
            code="invalid_value",
            job_code=LORA_UNSUPPORTED,
        )
    seen: set[str] = set()
    for index, adapter in enumerate(adapters):
        if adapter.path_or_id in seen:
            raise ParamRefused(
                f"lora[{index}].path_or_id",
                f"LoRA '{adapter.path_or_id}' is named twice; name each adapter once, with its scale.",
                code="invalid_value",
                job_code=LORA_UNSUPPORTED,
            )
        seen.add(adapter.path_or_id)
