"""Context parallelism (Ulysses / Ring) over a group of rank processes, one device each.

Two halves. The plan and its start-up checks are torch-free, so the worker's parent process (which
never imports torch) can refuse a bad configuration before it forks anything. Joining the process
group, sharding a transformer and keeping the ranks' denoising loops in step import torch lazily.

Each rank runs the whole pipeline on the same request; only the transformer is sharded (diffusers'
`enable_parallelism` with the model's `_cp_plan`), the text encoder and VAE are replicated, so every
rank ends with the same output and rank 0 simply keeps its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pipelines.spec.registry import ModelSpec
from pipelines.spec.types import StepCallback

log = logging.getLogger("darkroom.pipelines")

# Cache policies whose skip decision depends on the activations. Under context parallelism each
# rank sees only its shard of them, so ranks can decide differently at the same step: one runs the
# remaining blocks (and their all-to-alls) while another skips them, and the group deadlocks.
# TaylorSeer and MagCache (with calibrated ratios) decide from the step index alone, the same on
# every rank; TaylorSeer sharded matches it unsharded (tests/unit/pipelines/test_pipeline_parallel).
_SHARD_DEPENDENT_CACHES = {
    "first_block_cache": "first-block cache decides to skip from the first block's output, which "
    "each rank sees only a shard of: ranks could disagree and deadlock in a collective",
}


class ParallelConfigError(ValueError):
    """Options that cannot run together; the message lists every reason."""


@dataclass(frozen=True)
class ParallelPlan:
    devices: tuple[str, ...] = ()  # one per rank; empty or one device means unsharded
    ulysses_degree: int = 1
    ring_degree: int = 1
    timeout_s: float = 300.0  # a collective that waits longer than this raises instead of hanging
    cfg_degree: int = 1  # 2: the guided steps' two passes on two ranks (pipelines/cfg_parallel.py)

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


def cache_type_of(policy: Any) -> str | None:
    """The `type` of a cache policy given as a policy object, its dict form, or None."""
    if isinstance(policy, dict):
        return policy.get("type")
    return getattr(policy, "type", None)


def cache_conflict(policy: Any) -> str | None:
    """Why a cache policy (object, dict or type name) cannot run on a sharded group, or None."""
    cache_type = policy if isinstance(policy, str) else cache_type_of(policy)
    return _SHARD_DEPENDENT_CACHES.get(cache_type or "none")


def check_plan(
    plan: ParallelPlan, specs: Iterable[ModelSpec], cache_policies: dict[str, Any]
) -> None:
    """Refuse, with every reason, a plan that cannot run. `cache_policies` is model -> its default
    cache policy (object, dict or type name). Called at start-up, before any rank is spawned."""
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
        conflict = cache_conflict(cache_policies.get(spec.name))
        if conflict:
            reasons.append(
                f"model {spec.name}'s default cache policy cannot run sharded: {conflict}"
            )
    if reasons:
        raise ParallelConfigError("cannot start a sharded worker: " + "; ".join(reasons))


# ---- torch from here on: only inside rank processes ----


def join_group(plan: ParallelPlan, rank: int, init_method: str) -> Any:
    """Join the group's default process group; returns a gloo group for the step flag.

    The flag is a one-element CPU all-reduce per step, so it rides on gloo even when the model's
    collectives run on NCCL: it never waits for the GPU's queue.
    """
    import torch
    import torch.distributed as dist

    if plan.device_type == "cuda":
        torch.cuda.set_device(torch.device(plan.devices[rank]))
    else:
        # N ranks on one host's cores: each takes its share rather than all of them, which would
        # oversubscribe the cores (CPU sharding is for testing the group, not for speed).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.world_size))
    dist.init_process_group(
        plan.backend,
        init_method=init_method,
        rank=rank,
        world_size=plan.world_size,
        timeout=timedelta(seconds=plan.timeout_s),
    )
    return dist.new_group(backend="gloo", timeout=timedelta(seconds=plan.timeout_s))


@contextlib.contextmanager
def _cpu_device_count() -> Iterator[None]:
    """diffusers 0.42 `ModelMixin._resolve_parallel_config` picks the rank's device as
    `torch.device(device_type, rank % torch.accelerator.device_count())`; on a CPU-only host the
    count is 0 and that is a ZeroDivisionError. The device it computes is only recorded on the
    config (the CP hooks place nothing with it), so for the duration of that call the count reads
    1 and the recorded device is `cpu:0`. Only when there is no accelerator at all."""
    import torch

    if torch.accelerator.device_count() > 0:
        yield
        return
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


_mesh: Any = None  # this rank's, built once: building one is a collective that makes new groups


def group_mesh(plan: ParallelPlan) -> Any:
    """The group's device mesh, (cfg, ring, ulysses): each CFG half (`mesh["cfg"]`) shards its
    sequence over its own (ring, ulysses) sub-mesh, which is what diffusers is given."""
    global _mesh
    if _mesh is None:
        from torch.distributed.device_mesh import init_device_mesh

        _mesh = init_device_mesh(
            plan.device_type,
            (plan.cfg_degree, plan.ring_degree, plan.ulysses_degree),
            mesh_dim_names=("cfg", "ring", "ulysses"),
        )
    return _mesh


def enable_context_parallel(transformer: Any, plan: ParallelPlan) -> None:
    """Shard `transformer` over its CFG half of the group with diffusers' context parallelism."""
    from diffusers import ContextParallelConfig

    if type(transformer)._cp_plan is None:
        raise ParallelConfigError(
            f"{type(transformer).__name__} has no context-parallel plan in diffusers"
        )
    options: dict[str, Any] = {
        "ulysses_degree": plan.ulysses_degree,
        "ring_degree": plan.ring_degree,
        "mesh": group_mesh(plan)["ring", "ulysses"],
    }
    if plan.ring_degree == 1:
        # Plain Ulysses needs every sequence (Qwen's text stream included, whose length is the
        # prompt's) divisible by the degree; "anything" mode pads and lifts that.
        options["ulysses_anything"] = True
    _use_a_context_parallel_backend(transformer)
    with _cpu_device_count():
        transformer.enable_parallelism(config=ContextParallelConfig(**options))


def _use_a_context_parallel_backend(transformer: Any) -> None:
    """The attention backend chosen for the platform (pipelines.acceleration) may be one without a
    context-parallel path (aiter, flex, the math kernel); `enable_parallelism` would refuse it and
    leave the model half configured, so such a choice gives way to SDPA first, with a log line."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    for module in transformer.modules():
        backend = getattr(getattr(module, "processor", None), "_attention_backend", None)
        if backend is None:
            continue
        if not _AttentionBackendRegistry._is_context_parallel_available(
            AttentionBackendName(backend)
        ):
            log.warning(
                "attention backend %s has no context-parallel path; sharding with native SDPA",
                backend,
            )
            transformer.set_attention_backend("native")
        return


class GroupStopped(Exception):
    """Every rank stopped at the same step because one of them (rank 0) had to stop."""

    def __init__(self, cause: BaseException | None = None) -> None:
        super().__init__("stopped by the rank group")
        self.cause = cause


class SyncedSteps:
    """A step callback that keeps the ranks' loops in step when one must stop.

    `on_step` (rank 0's progress and cancel check) may raise. Each step every rank all-reduces a
    stop flag, so when rank 0's check raises, all ranks learn it at the same step and leave the
    pipeline together, with no rank left waiting in the next step's all-to-all. Rank 0 re-raises
    its own exception, followers raise GroupStopped; `stopped` says the group left in step, so the
    group is still usable for the next job.
    """

    def __init__(self, control_group: Any, on_step: StepCallback | None) -> None:
        self.control_group = control_group
        self.on_step = on_step
        self.stopped = False

    def __call__(self, done: int, total: int) -> None:
        import torch
        import torch.distributed as dist

        cause = None
        if self.on_step is not None:
            try:
                self.on_step(done, total)
            except Exception as error:  # handed on below, once the whole group knows
                cause = error
        flag = torch.tensor([0 if cause is None else 1], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.control_group)
        if flag.item():
            self.stopped = True
            raise cause if cause is not None else GroupStopped()


def leave_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
