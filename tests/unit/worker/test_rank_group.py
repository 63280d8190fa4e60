"""Rank 0's supervision of its follower ranks, with stand-in followers (plain processes) and a
stand-in pipeline: what a follower's death does to the job in flight, or to an idle group."""

from __future__ import annotations

import subprocess
import threading
from types import SimpleNamespace

import pytest

from pipelines.spec.parallel_plan import ParallelPlan
from pipelines.spec.registry import get_model
from pipelines.spec.types import GenerationRequest
from worker.execute import JobFailure
from worker.rank_group import RANK_LOST_CODE, RankGroup

PLAN = ParallelPlan(devices=("cpu", "cpu"), ulysses_degree=2)
REQUEST = GenerationRequest(prompt="x", width=16, height=16, seed=1, num_inference_steps=2)


@pytest.fixture
def follower_command() -> list[str]:
    # A follower that reads its jobs and otherwise waits, like a real one between jobs, and
    # exits on EOF, as a real one does when rank 0 closes the group.
    return ["cat"]


@pytest.fixture
def group(follower_command, tmp_path):
    idle_losses = threading.Event()
    group = RankGroup(PLAN, on_idle_loss=idle_losses.set)
    group.idle_losses = idle_losses
    group.received = tmp_path / "received"  # what the follower was handed, once it has exited
    with group.received.open("wb") as received:
        group.followers = [subprocess.Popen(follower_command, stdin=subprocess.PIPE, stdout=received)]
    group._supervisor.start()
    yield group
    group.close()


class CollectiveRun:
    """Runs until the follower is gone, then fails as gloo does when its peer closes."""

    spec = pipeline = None

    def __init__(self, group: RankGroup, exit_with: int | None = None) -> None:
        self.group = group
        self.exit_with = exit_with

    def run(self, request, on_step=None):
        follower = self.group.followers[0]
        if self.exit_with is None:
            follower.kill()
        else:
            follower.stdin.close()
            follower.wait()
        follower.wait()
        raise RuntimeError("Connection closed by peer")


def test_a_follower_killed_mid_job_fails_the_job_with_worker_rank_lost(group):
    with pytest.raises(JobFailure) as failure:
        group.run("m", CollectiveRun(group), REQUEST, None)
    assert failure.value.code == RANK_LOST_CODE
    assert "rank 1" in failure.value.message and "SIGKILL" in failure.value.message
    assert group.broken  # the worker process leaves after writing the failure
    assert not group.idle_losses.is_set()  # the job's failure is written first, by the worker
    with pytest.raises(JobFailure) as again:  # and nothing more runs on this group
        group.run("m", CollectiveRun(group), REQUEST, None)
    assert again.value.code == RANK_LOST_CODE


@pytest.mark.parametrize("follower_command", [["sh", "-c", "cat > /dev/null; exit 3"]])
def test_a_follower_that_failed_on_its_own_reports_the_models_error(group):
    with pytest.raises(JobFailure) as failure:
        group.run("m", CollectiveRun(group, exit_with=3), REQUEST, None)
    assert (
        failure.value.code == "generation_failed" and "Connection closed" in failure.value.message
    )


def test_a_follower_lost_while_idle_ends_rank_zeros_process(group):
    group.followers[0].kill()
    assert group.idle_losses.wait(timeout=30)
    assert group.broken and "SIGKILL" in group.lost


def test_a_missing_lora_fails_on_rank_zero_before_the_hand_off(group, tmp_path):
    """Rank 0 loads the adapters first (Runner.prepare_lora): a bad one never reaches a follower."""
    from pipelines.runners.base import Runner
    from pipelines.runners.lora import LoraAdapters
    from pipelines.spec.lora_names import LoraError
    from pipelines.spec.types import LoraWeight

    pipeline = SimpleNamespace(load_lora_weights=None)  # a stand-in with diffusers' LoRA loader
    local = Runner(get_model("tiny-qwen-image"), pipeline, loras=LoraAdapters(pipeline, tmp_path, 2))
    request = GenerationRequest(**{**REQUEST.__dict__, "lora": (LoraWeight("styles/none", 1.0),)})
    with pytest.raises(LoraError) as failure:
        group.run("m", local, request, None)
    assert failure.value.code == "lora_not_found"
    assert group.followers[0].poll() is None and not group.broken
    assert not group._in_flight
    group.close()  # the follower reads to the end, then exits
    assert group.received.read_bytes() == b""  # nothing was handed to it
