"""A sharded worker's plan, refused at start-up with every reason when it cannot run: device
counts, kinds and degrees, ring attention on CPU, models without a context-parallel plan or a
guided pass to split, and caches whose skips differ from rank to rank."""

from __future__ import annotations

import pytest

from pipelines.spec.cache_policy import FirstBlockCache, TaylorSeer
from pipelines.spec.parallel_plan import ParallelConfigError, ParallelPlan, check_plan
from pipelines.spec.registry import get_model

QWEN, WAN, FLUX = (get_model(name) for name in ("tiny-qwen-image", "tiny-wan", "tiny-flux"))
CFG_PLAN = ParallelPlan(devices=("cpu", "cpu"), cfg_degree=2)


def _refusal(plan: ParallelPlan, specs=(QWEN,), caches=None) -> str:
    with pytest.raises(ParallelConfigError) as error:
        check_plan(plan, specs, caches or {})
    return str(error.value)


def test_a_plan_that_can_run_passes():
    check_plan(
        ParallelPlan(devices=("cpu", "cpu"), ulysses_degree=2),
        [QWEN],
        {QWEN.name: TaylorSeer()},
    )
    check_plan(
        ParallelPlan(
            devices=("cuda:0", "cuda:1", "cuda:2", "cuda:3"), ulysses_degree=2, ring_degree=2
        ),
        [QWEN],
        {},
    )
    check_plan(
        ParallelPlan(), [QWEN], {QWEN.name: FirstBlockCache()}
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
    reason = _refusal(plan, caches={QWEN.name: FirstBlockCache(threshold=0.1)})
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


def test_cfg_plans_are_checked_at_start_up():
    fbc = {QWEN.name: FirstBlockCache()}
    check_plan(CFG_PLAN, [QWEN, WAN], fbc)  # no sequence sharding: each rank decides its own pass
    with_ulysses = ParallelPlan(devices=("cpu",) * 4, cfg_degree=2, ulysses_degree=2)
    check_plan(with_ulysses, [QWEN, WAN], {})
    for plan, specs, caches, reason in [
        (CFG_PLAN, [FLUX], {}, "guidance-distilled"),
        (with_ulysses, [QWEN], fbc, "first-block cache"),
        (ParallelPlan(devices=("cpu",) * 3, cfg_degree=3), [QWEN], {}, "1 or 2"),
        (ParallelPlan(devices=("cpu",) * 3, cfg_degree=2), [QWEN], {}, "the product must equal"),
    ]:
        with pytest.raises(ParallelConfigError, match=reason):
            check_plan(plan, specs, caches)
