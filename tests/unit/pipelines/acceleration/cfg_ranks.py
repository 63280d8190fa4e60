"""One rank of the CFG-parallel test (test_cfg_parallel.py), run as its own process:
`python -m tests.unit.pipelines.acceleration.cfg_ranks RANK ULYSSES INIT_METHOD MODELS_DIR OUT_DIR`.

Loads tiny-qwen-image and tiny-wan with the CFG split over two halves of gloo ranks (each half
sharded by Ulysses when ULYSSES > 1), runs the requests of
`REQUESTS` through Darkroom's runner, and saves each output with the transformer passes this rank
computed (its attention computations).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.cache import AttentionCounter
from pipelines.acceleration.distributed import join_group, leave_group
from pipelines.loader import load_runner
from pipelines.spec.parallel_plan import ParallelPlan
from pipelines.spec.registry import get_model
from pipelines.spec.types import GenerationRequest, ImageOutput

STEPS = 6


def cfg_plan(ulysses: int) -> ParallelPlan:
    return ParallelPlan(devices=("cpu",) * (2 * ulysses), cfg_degree=2, ulysses_degree=ulysses)


def requests() -> dict[str, tuple[str, GenerationRequest]]:
    qwen = GenerationRequest(
        prompt="a lighthouse on a cliff at dusk", width=64, height=48, seed=7, num_inference_steps=STEPS,
        negative_prompt=" ", true_cfg_scale=4.0,
    )  # fmt: skip
    wan = GenerationRequest(
        prompt="waves", width=32, height=32, seed=3, num_inference_steps=STEPS, negative_prompt="blur",
        guidance_scale=5.0, num_frames=5,
    )  # fmt: skip
    return {
        "qwen_true_cfg": ("tiny-qwen-image", qwen),
        "qwen_no_cfg": ("tiny-qwen-image", replace(qwen, true_cfg_scale=1.0)),
        "wan_cfg": ("tiny-wan", wan),
    }


def pixels(output) -> np.ndarray:
    if isinstance(output, ImageOutput):
        return np.stack([np.asarray(image, dtype=np.int16) for image in output.images])
    return output.frames.astype(np.int16)


def main(rank: int, ulysses: int, init_method: str, models_dir: Path, out_dir: Path) -> None:
    plan = cfg_plan(ulysses)
    join_group(plan, rank, init_method)
    runners = {
        name: load_runner(get_model(name), models_dir, "cpu", parallel=plan) for name in ("tiny-qwen-image", "tiny-wan")
    }
    passes = {}
    for name, (model, request) in requests().items():
        runner = runners[model]
        counter = AttentionCounter(runner.pipeline.transformer)
        started = time.perf_counter()
        output = runner.run(request)
        passes[name] = {"attention_calls": counter.calls, "seconds": round(time.perf_counter() - started, 3)}
        counter.remove()
        np.save(out_dir / f"{name}.rank{rank}.npy", pixels(output))
    (out_dir / f"passes.rank{rank}.json").write_text(json.dumps(passes))
    leave_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5]))
