"""Sharded pipelines: the start-up refusals, and tiny Qwen-Image sharded over two gloo ranks
(Ulysses 2) giving the unsharded run's output, with and without TaylorSeer."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from bench.processes import free_port
from pipelines.spec.parallel_plan import ParallelConfigError, ParallelPlan, check_plan
from pipelines.spec.registry import get_model
from tests.unit.pipelines.sharded_ranks import pipeline_kwargs, taylorseer

QWEN = get_model("tiny-qwen-image")


def _refusal(plan: ParallelPlan, specs=(QWEN,), caches=None) -> str:
    with pytest.raises(ParallelConfigError) as error:
        check_plan(plan, specs, caches or {})
    return str(error.value)


def test_a_plan_that_can_run_passes():
    check_plan(
        ParallelPlan(devices=("cpu", "cpu"), ulysses_degree=2),
        [QWEN],
        {QWEN.name: {"type": "taylorseer"}},
    )
    check_plan(
        ParallelPlan(
            devices=("cuda:0", "cuda:1", "cuda:2", "cuda:3"), ulysses_degree=2, ring_degree=2
        ),
        [QWEN],
        {},
    )
    check_plan(
        ParallelPlan(), [QWEN], {QWEN.name: {"type": "first_block_cache"}}
    )  # unsharded: anything


def test_degrees_must_multiply_to_the_device_count():
    reason = _refusal(ParallelPlan(devices=("cpu",) * 3, ulysses_degree=2))
    assert "ulysses degree 2 x ring degree 1 = 2, but 3 devices" in reason
    assert "needs as many devices" in _refusal(ParallelPlan(devices=(), ulysses_degree=2))


def test_ring_attention_is_refused_on_cpu_with_the_reason():
    reason = _refusal(ParallelPlan(devices=("cpu", "cpu"), ring_degree=2))
    assert "ring attention cannot run on CPU" in reason and "log-sum-exp" in reason


def test_first_block_cache_is_refused_on_a_sharded_group():
    plan = ParallelPlan(devices=("cpu", "cpu"), ulysses_degree=2)
    reason = _refusal(plan, caches={QWEN.name: {"type": "first_block_cache", "threshold": 0.1}})
    assert (
        f"model {QWEN.name}'s default cache policy cannot run sharded" in reason
        and "deadlock" in reason
    )


def test_a_model_without_a_context_parallel_plan_is_refused():
    no_plan = get_model("tiny-qwen-image").__class__(
        **{**QWEN.__dict__, "name": "x", "pipeline_class": "SanaPipeline"}
    )
    assert "x (SanaPipeline) has no context-parallel plan" in _refusal(
        ParallelPlan(devices=("cpu", "cpu"), ulysses_degree=2), [no_plan]
    )


def test_mixed_or_repeated_gpus_are_refused():
    assert "one kind" in _refusal(ParallelPlan(devices=("cpu", "cuda:0"), ulysses_degree=2))
    assert "its own GPU" in _refusal(ParallelPlan(devices=("cuda:0", "cuda:0"), ulysses_degree=2))


def test_every_reason_is_given_at_once():
    reason = _refusal(ParallelPlan(devices=("cpu",) * 3, ulysses_degree=1, ring_degree=2))
    assert "ring attention" in reason and "must equal the number of devices" in reason


def test_device_settings_parse_gpu_indices():
    from darkroom.settings import Settings

    settings = Settings(devices="0,1", ulysses_degree=2)
    assert settings.devices == ("cuda:0", "cuda:1") and settings.parallel_plan.backend == "nccl"
    assert Settings(devices="cpu,cpu").parallel_plan.backend == "gloo"


def test_tiny_qwen_image_sharded_over_two_gloo_ranks_equals_the_unsharded_run(
    t2i_runner, models_dir, tmp_path
):
    init_method = f"tcp://127.0.0.1:{free_port()}"
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.unit.pipelines.sharded_ranks",
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
