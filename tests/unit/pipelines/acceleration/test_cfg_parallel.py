"""CFG parallelism: a guided step's two transformer passes run on two gloo ranks at once and give
the unsplit run's output; a job without guidance runs whole on both ranks."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from bench.cache import AttentionCounter
from bench.processes import free_port
from pipelines.acceleration.cfg_parallel import makes_two_passes
from pipelines.spec.registry import get_model
from tests.unit.pipelines.acceleration.cfg_ranks import STEPS, pixels, requests

QWEN, WAN, FLUX = (get_model(name) for name in ("tiny-qwen-image", "tiny-wan", "tiny-flux"))


def test_which_requests_make_two_passes():
    _, qwen = requests()["qwen_true_cfg"]
    _, wan = requests()["wan_cfg"]
    assert makes_two_passes(QWEN, qwen) and makes_two_passes(WAN, wan)
    assert not makes_two_passes(QWEN, qwen.__class__(**{**qwen.__dict__, "negative_prompt": None}))
    assert not makes_two_passes(QWEN, requests()["qwen_no_cfg"][1])
    assert not makes_two_passes(WAN, wan.__class__(**{**wan.__dict__, "guidance_scale": 1.0}))
    assert not makes_two_passes(FLUX, qwen)


@pytest.mark.parametrize("ulysses", [1, 2], ids=["cfg2", "cfg2xulysses2"])
def test_ranks_split_the_guided_passes_and_match_the_unsplit_run(
    t2i_runner, video_runner, models_dir, tmp_path, ulysses
):
    """cfg 2: ranks 0 and 1 each make one pass. cfg 2 x ulysses 2: ranks 0-1 make the conditional
    pass sharded over both, ranks 2-3 the unconditional one."""
    init_method = f"tcp://127.0.0.1:{free_port()}"
    world = 2 * ulysses
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.unit.pipelines.acceleration.cfg_ranks", str(rank), str(ulysses), init_method]
            + [str(models_dir), str(tmp_path)]
        )
        for rank in range(world)
    ]
    try:
        for rank in ranks:
            assert rank.wait(timeout=240) == 0
    finally:
        for rank in ranks:
            rank.kill()
    split = [json.loads((tmp_path / f"passes.rank{rank}.json").read_text()) for rank in range(world)]

    runners = {"tiny-qwen-image": t2i_runner, "tiny-wan": video_runner}
    for name, (model, request) in requests().items():
        counter = AttentionCounter(runners[model].pipeline.transformer)
        started = time.perf_counter()
        whole = pixels(runners[model].run(request))
        seconds, calls = time.perf_counter() - started, counter.calls
        counter.remove()
        print(f"{name}: unsplit {seconds:.3f} s, CFG-parallel rank 0 {split[0][name]['seconds']} s")
        for rank in range(world):
            output = np.load(tmp_path / f"{name}.rank{rank}.npy")
            assert output.shape == whole.shape
            assert np.abs(output - whole).max() <= 1, (name, rank)  # uint8 pixels; thread counts differ
        # Attention modules run on every rank of a Ulysses group (each on its shard of heads).
        per_pass = calls // (2 * STEPS) if name != "qwen_no_cfg" else calls // STEPS
        for rank in range(world):
            counted = split[rank][name]["attention_calls"]
            if name == "qwen_no_cfg":
                assert counted == calls, (name, rank)
            elif rank < ulysses:  # the conditional pass of every step
                assert counted == STEPS * per_pass, (name, rank)
            else:  # the unconditional pass of every step, and the first step's conditional one (its shape)
                assert counted == (STEPS + 1) * per_pass, (name, rank)
