"""The plan of a sharded worker (a group of rank processes, one device each) and its start-up checks.

Torch-free, so the worker's parent process (which never imports torch) can refuse a bad
configuration before it forks anything. Running the plan (joining the process group, sharding a
transformer, keeping the ranks' denoising loops in step) is pipelines/acceleration/distributed.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipelines.spec.cache_policy import CachePolicy
from pipelines.spec.checks import Deployment, ParamRefused, check_cache
from pipelines.spec.registry import ModelSpec


class ParallelConfigError(ValueError):
    """Options that cannot run together; the message lists every reason."""


@dataclass(frozen=True)
class ParallelPlan:
    devices: tuple[str, ...] = ()  # one per rank; empty or one device means unsharded
    ulysses_degree: int = 1
    ring_degree: int = 1
    timeout_s: float = 300.0  # a collective that waits longer than this raises instead of hanging
    cfg_degree: int = 1  # 2: the guided steps' two passes on two ranks (acceleration/cfg_parallel.py)

    @property
    def world_size(self) -> int:
        return max(1, len(self.devices))

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @property
    def context_parallel(self) -> bool:
        return self.ulysses_degree * self.ring_degree > 1

    @property
    def degrees(self) -> int:
        return self.cfg_degree * self.ulysses_degree * self.ring_degree

    @property
    def device_type(self) -> str:
        return self.devices[0].split(":")[0] if self.devices else "cpu"

    @property
    def backend(self) -> str:
        # NCCL on CUDA; ROCm builds of torch expose their GPUs as "cuda" and map NCCL onto RCCL.
        return "nccl" if self.device_type == "cuda" else "gloo"

    def describe(self) -> str:
        return (
            f"{self.world_size} ranks on {','.join(self.devices)} (cfg {self.cfg_degree} x "
            f"ulysses {self.ulysses_degree} x ring {self.ring_degree}, {self.backend})"
        )


def check_plan(
    plan: ParallelPlan, specs: Iterable[ModelSpec], cache_policies: dict[str, CachePolicy]
) -> None:
    """Refuse, with every reason, a plan that cannot run. `cache_policies` is model -> its default
    cache policy. Called at start-up, before any rank is spawned."""
    if not plan.sharded:
        if plan.degrees != 1:
            raise ParallelConfigError(
                f"cfg degree {plan.cfg_degree} x ulysses degree {plan.ulysses_degree} x ring degree "
                f"{plan.ring_degree} needs as many devices; DARKROOM_DEVICES names {len(plan.devices)}"
            )
        return
    reasons = []
    if min(plan.cfg_degree, plan.ulysses_degree, plan.ring_degree) < 1:
        reasons.append("cfg, ulysses and ring degrees must be at least 1")
    elif plan.degrees != plan.world_size:
        reasons.append(
            f"cfg degree {plan.cfg_degree} x ulysses degree {plan.ulysses_degree} x ring degree "
            f"{plan.ring_degree} = {plan.degrees}, but {plan.world_size} devices are named "
            f"({','.join(plan.devices)}); the product must equal the number of devices"
        )
    if plan.cfg_degree > 2:
        reasons.append("a guided step has two passes: the cfg degree is 1 or 2")
    kinds = {device.split(":")[0] for device in plan.devices}
    if len(kinds) > 1:
        reasons.append(f"all devices of a group must be of one kind, got {','.join(plan.devices)}")
    if kinds - {"cpu", "cuda"}:
        reasons.append(
            f"sharding runs on cuda (NCCL/RCCL) or cpu (gloo) devices, got {','.join(plan.devices)}"
        )
    if plan.device_type == "cuda" and len(set(plan.devices)) != len(plan.devices):
        reasons.append(f"each rank needs its own GPU, got {','.join(plan.devices)}")
    if plan.device_type == "cpu" and plan.ring_degree > 1:
        reasons.append(
            "ring attention cannot run on CPU: it needs an attention backend that returns the "
            "log-sum-exp, and none of diffusers' CPU backends (native SDPA, math, flex) does; use "
            "ulysses only"
        )
    for spec in specs:
        if plan.cfg_degree == 2 and spec.true_cfg_scale is None and spec.negative_prompt is None:
            reasons.append(
                f"model {spec.name} makes one transformer pass per step (guidance-distilled): "
                "cfg parallelism has nothing to split"
            )
        if not plan.context_parallel:
            continue  # the rest is about sharding the sequence
        if spec.traits.context_parallel_transformer is None:
            reasons.append(
                f"model {spec.name} ({spec.pipeline_class}) has no context-parallel plan in diffusers"
            )
        policy = cache_policies.get(spec.name)
        try:
            if policy is not None:
                check_cache(spec, policy, Deployment(sharded=True))
        except ParamRefused as refused:
            reasons.append(f"model {spec.name}'s default cache policy cannot run sharded: {refused}")
    if reasons:
        raise ParallelConfigError("cannot start a sharded worker: " + "; ".join(reasons))

