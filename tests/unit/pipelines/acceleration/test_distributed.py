"""Tiny Qwen-Image sharded over two gloo ranks (Ulysses 2) gives the unsharded run's output,
with and without TaylorSeer."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import torch

from bench.processes import free_port
from tests.unit.pipelines.acceleration.sharded_ranks import pipeline_kwargs, taylorseer


def test_tiny_qwen_image_sharded_over_two_gloo_ranks_equals_the_unsharded_run(
    t2i_runner, models_dir, tmp_path
):
    init_method = f"tcp://127.0.0.1:{free_port()}"
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.unit.pipelines.acceleration.sharded_ranks",
                str(rank),
                init_method,
                str(models_dir),
                str(tmp_path),
            ],
        )
        for rank in (0, 1)
    ]
    try:
        for rank in ranks:
            assert rank.wait(timeout=180) == 0
    finally:
        for rank in ranks:
            rank.kill()
    sharded = np.load(tmp_path / "sharded.npy")

    started = time.perf_counter()
    unsharded = t2i_runner.pipeline(**pipeline_kwargs(7)).images[0]
    unsharded_s = time.perf_counter() - started
    difference = float(np.abs(sharded - unsharded).max())
    sharded_s = (tmp_path / "sharded_s.txt").read_text()
    print(
        f"tiny qwen 64x48, 4 steps, true CFG: sharded {sharded_s} s, unsharded {unsharded_s:.3f} s"
    )
    print(f"max abs difference sharded vs unsharded: {difference:.2e}")

    assert sharded.shape == unsharded.shape == (48, 64, 3)
    assert difference <= 1e-3

    t2i_runner.pipeline.transformer.enable_cache(taylorseer())
    try:
        cached = t2i_runner.pipeline(**pipeline_kwargs(7, steps=12)).images[0]
    finally:
        t2i_runner.pipeline.transformer.disable_cache()
    assert float(np.abs(np.load(tmp_path / "taylorseer.npy") - cached).max()) <= 1e-3
    assert torch.is_tensor(torch.from_numpy(sharded))  # plain floats, not quantised pixels
