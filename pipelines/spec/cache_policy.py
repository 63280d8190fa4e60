"""Cache acceleration policies: which of diffusers' cache hooks a job runs with, and its knobs.

Pure data (pydantic, no torch): the API validates a request's `cache` against these models, the
job records the policy as a plain dict, and the worker turns it into a diffusers config
(pipelines/acceleration/cache_hooks.py). Only hooks that work with separate cond/uncond passes are offered
(diffusers-notes: PyramidAttentionBroadcast and FasterCache break on Qwen and Wan CFG).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoCache(_Policy):
    type: Literal["none"] = "none"


class FirstBlockCache(_Policy):
    """Skip the remaining blocks when the first block's residual moved less than `threshold`
    (relative mean absolute difference) since the last full step."""

    type: Literal["first_block_cache"] = "first_block_cache"
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.1


class TaylorSeer(_Policy):
    """Compute every attention fully each `interval` steps and predict it in between from a
    Taylor expansion of order `order`; the first `warmup_steps` steps always compute."""

    type: Literal["taylorseer"] = "taylorseer"
    interval: Annotated[int, Field(ge=1, le=20)] = 5
    warmup_steps: Annotated[int, Field(ge=0, le=100)] = 3
    order: Annotated[int, Field(ge=0, le=3)] = 1


class MagCache(_Policy):
    """Skip steps while the accumulated error, predicted from per-step magnitude ratios
    calibrated for the checkpoint, stays under `threshold`. Only models with ratios offer it."""

    type: Literal["magcache"] = "magcache"
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.06
    max_skip_steps: Annotated[int, Field(ge=1, le=10)] = 3
    retention_ratio: Annotated[float, Field(ge=0, le=1)] = 0.2


CachePolicy = Annotated[NoCache | FirstBlockCache | TaylorSeer | MagCache, Field(discriminator="type")]
CACHE_TYPES: tuple[str, ...] = ("none", "first_block_cache", "taylorseer", "magcache")
NO_CACHE = NoCache()

_ADAPTER: TypeAdapter = TypeAdapter(CachePolicy)


def parse_cache_policy(data: object) -> NoCache | FirstBlockCache | TaylorSeer | MagCache:
    """A policy from its dict form (a job's params, a setting); pydantic's ValidationError if bad."""
    return _ADAPTER.validate_python(data)
