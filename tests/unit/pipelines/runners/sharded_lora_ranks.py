"""One rank of the sharded LoRA test (test_lora.py), run as its own process:
`python -m tests.unit.pipelines.runners.sharded_lora_ranks RANK INIT_METHOD MODELS_DIR LORA_DIR OUT_DIR`.

Loads tiny-qwen-image sharded (Ulysses 2 over gloo) with a LoRA directory, as a worker rank does,
then runs through `Runner.run`: a job with an adapter, a job without, and an adapter on `proj_out`
(a module the sharded transformer gathers at), which must fail on every rank before any
collective, leaving the group in step for the last job.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from pipelines.acceleration.distributed import join_group, leave_group
from pipelines.loader import load_runner
from pipelines.spec.lora_names import LoraError
from pipelines.spec.registry import get_model
from pipelines.spec.types import GenerationRequest, LoraWeight
from tests.unit.pipelines.acceleration.sharded_ranks import PLAN

REQUEST = GenerationRequest(
    prompt="a lighthouse on a cliff at dusk",
    width=64,
    height=48,
    seed=7,
    num_inference_steps=3,
    negative_prompt=" ",
    true_cfg_scale=4.0,
)
WITH_LORA = dataclasses.replace(REQUEST, lora=(LoraWeight("a", 0.8),))


def image(runner, request) -> np.ndarray:
    return np.asarray(runner.run(request).images[0])


def main(rank: int, init_method: str, models_dir: Path, lora_dir: Path, out_dir: Path) -> None:
    join_group(PLAN, rank, init_method)
    runner = load_runner(
        get_model("tiny-qwen-image"), models_dir, "cpu", parallel=PLAN, lora_dir=lora_dir
    )
    outputs = {"lora": image(runner, WITH_LORA), "base": image(runner, REQUEST)}
    try:
        runner.run(dataclasses.replace(REQUEST, lora=(LoraWeight("proj-out", 1.0),)))
        raise AssertionError("an adapter on a gathered module ran sharded")
    except LoraError as error:
        assert error.code == "lora_incompatible", error
    outputs["base_again"] = image(runner, REQUEST)
    if rank == 0:
        for name, array in outputs.items():
            np.save(out_dir / f"{name}.npy", array)
    leave_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
