"""CFG parallelism: with classifier-free guidance a step makes two transformer passes, the
conditional and the unconditional one; two ranks each make one of them at the same time.

diffusers 0.42 shards the sequence (context parallelism) but not the guidance batch. Its pipelines
do mark the two passes: each transformer call runs inside `transformer.cache_context("cond")` or
`("uncond")`, which tells every stateful hook on the transformer which pass it is in. Darkroom
adds one such hook. The group's mesh has a "cfg" dimension of 2 (distributed.group_mesh):
the first half runs the "cond" pass and skips the "uncond" one, the second half the reverse; after
the "uncond" pass each rank swaps results with its counterpart in one all-gather, written into the
tensors the pipeline already holds, so the pipeline combines them exactly as unsharded. Each half
may shard its own pass further with Ulysses / Ring over its part of the mesh.

Whether a job makes two passes is decided by the pipeline from the request (a negative prompt and
a scale above 1), so the runner tells the hook per job (`cfg_split`); a job with one pass runs
whole on both ranks, as it would unsharded. On the first step both ranks make the "cond" pass:
it is how rank 1 learns the shape of the output it stands in for, at the cost of one pass a job.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from pipelines.spec.registry import ModelSpec
from pipelines.spec.types import GenerationRequest

HOOK_NAME = "darkroom_cfg_parallel"


class _NoState(BaseState):
    pass


class CfgSplitHook(ModelHook):
    """Runs this rank's half of each guided step's two transformer passes (see module doc)."""

    _is_stateful = True  # so that `cache_context` reaches `contexts`

    def __init__(self, rank: int, group: Any) -> None:
        super().__init__()
        self.rank = rank  # 0 makes the conditional pass, 1 the unconditional one
        self.group = group  # this rank and its counterpart in the other half
        self.contexts = StateManager(_NoState)
        self.active = False  # set per job by `cfg_split`
        self.template: torch.Tensor | None = None  # a "cond" output, for the shape of stand-ins
        self.cond_output: torch.Tensor | None = None  # this step's, real or a stand-in

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        context = self.contexts._context
        if not self.active or context is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        if context.name == "cond":
            if self.cond_output is not None:
                raise RuntimeError("CFG parallel: two conditional passes without an unconditional one")
            if self.rank == 0 or self.template is None:
                output = self.fn_ref.original_forward(*args, **kwargs)
                self.template = output[0]
            else:
                output = _wrap(torch.empty_like(self.template), kwargs)
            self.cond_output = output[0]
            return output
        if context.name != "uncond" or self.cond_output is None:
            raise RuntimeError(f"CFG parallel: unexpected pass {context.name!r}")
        if self.rank == 1:
            output = self.fn_ref.original_forward(*args, **kwargs)
        else:
            output = _wrap(torch.empty_like(self.cond_output), kwargs)
        uncond = output[0]
        halves = [torch.empty_like(uncond) for _ in range(2)]
        dist.all_gather(halves, (self.cond_output if self.rank == 0 else uncond).contiguous(), group=self.group)
        if self.rank == 0:
            uncond.copy_(halves[1])
        else:
            self.cond_output.copy_(halves[0])  # the pipeline holds this tensor (or a view of it)
        self.cond_output = None
        return output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.template = None
        self.cond_output = None
        return module


def _wrap(sample: torch.Tensor, kwargs: dict[str, Any]) -> Any:
    """A transformer's return value around `sample`, as the call asked for it."""
    if kwargs.get("return_dict", True):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        return Transformer2DModelOutput(sample=sample)
    return (sample,)


def enable_cfg_parallel(transformer: torch.nn.Module, mesh: Any) -> None:
    """Split guided steps over `mesh`'s "cfg" dimension (distributed.group_mesh)."""
    hook = CfgSplitHook(mesh.get_local_rank("cfg"), mesh.get_group("cfg"))
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, HOOK_NAME)


def makes_two_passes(spec: ModelSpec, request: GenerationRequest) -> bool:
    """Whether the pipeline will run the transformer twice a step for this request: the rule the
    diffusers pipelines apply to the arguments our runners pass them."""
    if spec.true_cfg_scale is not None:  # Qwen-Image: true CFG, given a negative prompt
        return (request.true_cfg_scale or 0) > 1 and request.negative_prompt is not None
    if spec.negative_prompt is not None:  # Wan: classic CFG on guidance_scale
        return (request.guidance_scale or 0) > 1
    return False  # guidance-distilled (FLUX.1-dev): one pass, the scale is an input


@contextmanager
def cfg_split(transformer: torch.nn.Module, two_passes: bool) -> Iterator[None]:
    """Split this job's guided steps over the CFG ranks, when the transformer has the hook."""
    registry = getattr(transformer, "_diffusers_hook", None)
    hook = registry.get_hook(HOOK_NAME) if registry is not None else None
    if hook is None or not two_passes:
        yield
        return
    hook.active = True
    try:
        yield
    finally:
        hook.active = False
        hook.reset_state(transformer)
