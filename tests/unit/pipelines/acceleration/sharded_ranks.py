"""One rank of the direct sharding test (test_distributed.py), run as its own process:
`python -m tests.unit.pipelines.acceleration.sharded_ranks RANK INIT_METHOD MODELS_DIR OUT_DIR`.

Loads tiny-qwen-image with its transformer sharded (Ulysses 2 over gloo), then: a run that rank 0
stops at step 2 (every rank must leave together), then a full run whose float image rank 0 saves.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipelines.acceleration.distributed import GroupStopped, SyncedSteps, join_group, leave_group
from pipelines.loader import load_runner
from pipelines.spec.parallel_plan import ParallelPlan
from pipelines.spec.registry import get_model

PLAN = ParallelPlan(devices=("cpu", "cpu"), ulysses_degree=2)


def pipeline_kwargs(seed: int, steps: int = 4) -> dict:
    # A prompt whose token count is odd: plain Ulysses 2 would refuse the text stream.
    return {
        "prompt": "a lighthouse on a cliff at dusk",
        "negative_prompt": " ",
        "true_cfg_scale": 4.0,
        "width": 64,
        "height": 48,
        "num_inference_steps": steps,
        "generator": torch.Generator().manual_seed(seed),
        "output_type": "np",
    }


class Cancelled(Exception):
    pass


def main(rank: int, init_method: str, models_dir: Path, out_dir: Path) -> None:
    control = join_group(PLAN, rank, init_method)
    runner = load_runner(get_model("tiny-qwen-image"), models_dir, "cpu", parallel=PLAN)

    def cancel_at_2(done: int, total: int) -> None:
        if done == 2:
            raise Cancelled()

    steps = SyncedSteps(control, cancel_at_2 if rank == 0 else None)
    try:
        runner.pipeline(
            **pipeline_kwargs(1), callback_on_step_end=lambda p, i, t, k: steps(i + 1, 4) or {}
        )
        raise AssertionError("the stopped run completed")
    except (Cancelled, GroupStopped) as stopped:
        expected = Cancelled if rank == 0 else GroupStopped
        assert isinstance(stopped, expected) and steps.stopped, (rank, stopped)

    started = time.perf_counter()
    image = runner.pipeline(**pipeline_kwargs(7)).images[0]
    if rank == 0:
        np.save(out_dir / "sharded.npy", image)
        (out_dir / "sharded_s.txt").write_text(f"{time.perf_counter() - started:.3f}")

    # TaylorSeer decides from the step index, the same on every rank: it can run sharded.
    runner.pipeline.transformer.enable_cache(taylorseer())
    image = runner.pipeline(**pipeline_kwargs(7, steps=12)).images[0]
    runner.pipeline.transformer.disable_cache()
    if rank == 0:
        np.save(out_dir / "taylorseer.npy", image)
    leave_group()


def taylorseer():
    from diffusers import TaylorSeerCacheConfig

    return TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=2, max_order=1)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
