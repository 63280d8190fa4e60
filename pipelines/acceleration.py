"""What makes a resident pipeline fast, chosen once per worker or per job, all through diffusers:
cache hooks (`enable_cache` / `disable_cache`), attention backends (`set_attention_backend`) and
regional `torch.compile` of the transformer's repeated blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

from pipelines.spec.cache_policy import FirstBlockCache, MagCache, NoCache, TaylorSeer
from pipelines.spec.registry import ModelSpec

log = logging.getLogger("darkroom.pipelines")

# Per-step magnitude ratios calibrated on real checkpoints, by the name a ModelSpec gives.
MAG_RATIOS: dict[str, torch.Tensor] = {"flux": FLUX_MAG_RATIOS}

# TaylorSeer's default module patterns miss Wan's `attn1` / `attn2` and it silently does nothing
# (diffusers-notes); this one names the attention of every block in Qwen, Wan and FLUX.
_TAYLORSEER_ATTENTION = [r"(transformer_blocks|single_transformer_blocks|blocks)\.\d+\.attn\d?"]

Policy = NoCache | FirstBlockCache | TaylorSeer | MagCache


@dataclass(frozen=True)
class Acceleration:
    """A worker's choices, from its settings: the same for every model it serves, except the
    cache, which the operator may set per model over the registry's default."""

    attention_backend: str = "auto"  # a diffusers backend name, or "auto" (the platform's best)
    compile: bool = False
    warm_up: bool = True  # one short generation per model at start, so no user's job is the first
    cache: dict[str, Policy] = field(default_factory=dict)  # model name -> policy


def diffusers_cache_config(policy: Policy, spec: ModelSpec, num_inference_steps: int) -> Any | None:
    """The diffusers config for `policy` on `spec`'s transformer, or None for no cache."""
    if isinstance(policy, FirstBlockCache):
        return FirstBlockCacheConfig(threshold=policy.threshold)
    if isinstance(policy, TaylorSeer):
        return TaylorSeerCacheConfig(
            cache_interval=policy.interval,
            disable_cache_before_step=policy.warmup_steps,
            max_order=policy.order,
            taylor_factors_dtype=getattr(torch, spec.dtype),
            cache_identifiers=_TAYLORSEER_ATTENTION,
        )
    if isinstance(policy, MagCache):
        if spec.mag_ratios is None:
            raise ValueError(f"{spec.name} has no calibrated MagCache ratios")
        return MagCacheConfig(
            threshold=policy.threshold,
            max_skip_steps=policy.max_skip_steps,
            retention_ratio=policy.retention_ratio,
            num_inference_steps=num_inference_steps,
            mag_ratios=MAG_RATIOS[spec.mag_ratios],
        )
    return None


@contextmanager
def cache_enabled(transformer: Any, config: Any | None) -> Iterator[None]:
    """The cache hooks for one pipeline call, removed after it whatever happens.

    Hooks are applied per job and removed after it, so no cache state (residuals, Taylor factors,
    step counters shaped for one request's size) can outlive the job that made it: SGLang's server
    crashed when cache contexts leaked across requests of different shapes. Applying them costs a
    walk over the transformer's modules, microseconds next to one denoising step.
    """
    if config is None:
        yield
        return
    transformer.enable_cache(config)
    try:
        yield
    finally:
        transformer.disable_cache()


def attention_backend_candidates(device: str) -> list[str]:
    """Backends to try on `device`, best first; `native` (PyTorch SDPA) works everywhere."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return ["native"]
    if torch.version.hip is not None:
        # ROCm: AMD's aiter flash attention, as a Hub kernel (must be in the HF cache offline).
        return ["aiter_fa2_hub", "native"]
    major, _minor = torch.cuda.get_device_capability(torch.device(device))
    # FA3 from a local build, else the Hub kernel the CUDA image's `kernels` package fetches.
    hopper = ["_flash_3", "_flash_3_hub"] if major == 9 else []
    return [*hopper, "flash", "sage", "native"]


def set_attention_backend(transformer: Any, requested: str, device: str) -> str:
    """Set the first usable backend of `requested` ("auto": the platform's best) and return it.

    diffusers checks a backend's package when it is set; whether the kernel accepts this model's
    inputs (a mask, a head size) shows only when it runs, which the worker's warm-up does
    (`fall_back_to_native`).
    """
    candidates = attention_backend_candidates(device) if requested == "auto" else [requested, "native"]
    for backend in dict.fromkeys(candidates):
        if backend == "native":
            return backend  # diffusers' default: setting it again only logs a warning
        try:
            transformer.set_attention_backend(backend)
        except (RuntimeError, ValueError, ImportError) as error:
            log.info("attention backend %s is not usable here: %s", backend, error)
            continue
        return backend
    raise RuntimeError("no attention backend could be set, not even native")


def fall_back_to_native(transformer: Any) -> str:
    transformer.set_attention_backend("native")
    return "native"


def cache_with_compile_refusal(model: str, cache_type: str) -> str:
    """Why a cache policy and a compiled transformer are not combined.

    Measured on an H200 (full-size Qwen-Image, 50 steps, bench/full_size.py): diffusers' cache
    hooks keep Python state (step counters, the hook objects themselves) that dynamo guards on, so
    every job recompiles until the recompile limit and then runs partly eager: compiled + first
    block cache took 18.7 s and compiled + TaylorSeer 13.2 s against 7.0 s compiled alone, and
    compiled runs without a cache after them slowed to 8.6 s. Refused rather than dropped.
    """
    return (
        f"model {model}: cache policy {cache_type!r} cannot run on a compiled transformer "
        "(diffusers' cache hooks force torch.compile to recompile on every job). Turn off "
        "DARKROOM_COMPILE_TRANSFORMER, or set the model's cache to none in DARKROOM_MODEL_CACHE "
        f'(e.g. {{"{model}": {{"type": "none"}}}}).'
    )


def compile_transformer(transformer: Any) -> None:
    """Regional compilation: each repeated block is compiled once and the code reused for every
    block, which compiles in a fraction of the whole model's time (diffusers'
    `compile_repeated_blocks`). The graphs are built at the first call: the worker's warm-up."""
    transformer.compile_repeated_blocks(fullgraph=False, dynamic=None)
