"""Cache hooks for one job: a request's cache policy (pipelines/spec/cache_policy.py) as a diffusers
cache config, enabled on the transformer (`enable_cache`) for one pipeline call and removed after it
(`disable_cache`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

from pipelines.spec.cache_policy import FirstBlockCache, MagCache, NoCache, TaylorSeer
from pipelines.spec.registry import ModelSpec

# Per-step magnitude ratios calibrated on real checkpoints, by the name a ModelSpec gives.
MAG_RATIOS: dict[str, torch.Tensor] = {"flux": FLUX_MAG_RATIOS}

# TaylorSeer's default module patterns miss Wan's `attn1` / `attn2` and it silently does nothing
# (diffusers-notes); this one names the attention of every block in Qwen, Wan and FLUX.
_TAYLORSEER_ATTENTION = [r"(transformer_blocks|single_transformer_blocks|blocks)\.\d+\.attn\d?"]

Policy = NoCache | FirstBlockCache | TaylorSeer | MagCache


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
    if isinstance(policy, MagCache):  # offered only with ratios (pipelines/spec/checks.py)
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
