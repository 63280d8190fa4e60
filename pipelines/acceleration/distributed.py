"""Context parallelism (Ulysses / Ring) over a group of rank processes, one device each: joining
the process group, sharding a transformer, and keeping the ranks' denoising loops in step. Only
rank processes import this; the plan they run, and its start-up checks, are torch-free
(pipelines/spec/parallel_plan.py).

Each rank runs the whole pipeline on the same request; only the transformer is sharded (diffusers'
`enable_parallelism` with the model's `_cp_plan`), the text encoder and VAE are replicated, so every
rank ends with the same output and rank 0 simply keeps its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
from torch.distributed.device_mesh import init_device_mesh

from pipelines.spec.parallel_plan import ParallelConfigError, ParallelPlan
from pipelines.spec.types import StepCallback

log = logging.getLogger("darkroom.pipelines")


def join_group(plan: ParallelPlan, rank: int, init_method: str) -> Any:
    """Join the group's default process group; returns a gloo group for the step flag.

    The flag is a one-element CPU all-reduce per step, so it rides on gloo even when the model's
    collectives run on NCCL: it never waits for the GPU's queue.
    """
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
        _mesh = init_device_mesh(
            plan.device_type,
            (plan.cfg_degree, plan.ring_degree, plan.ulysses_degree),
            mesh_dim_names=("cfg", "ring", "ulysses"),
        )
    return _mesh


def enable_context_parallel(transformer: Any, plan: ParallelPlan) -> None:
    """Shard `transformer` over its CFG half of the group with diffusers' context parallelism."""
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
    """The attention backend chosen for the platform (pipelines/acceleration/attention.py) may be
    one without a context-parallel path (aiter, flex, the math kernel); `enable_parallelism` would
    refuse it and leave the model half configured, so such a choice gives way to SDPA first, with a
    log line."""
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
    if dist.is_initialized():
        dist.destroy_process_group()
