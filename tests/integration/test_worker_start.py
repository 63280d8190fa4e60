"""A worker that cannot serve its models refuses to start: it exits with EX_CONFIG and says why,
instead of taking jobs it cannot run (Celery swallows errors raised while the pool child starts)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench.processes import spawn
from darkroom.processes import EXIT_CANNOT_START


def _run_until_exit(args: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
    """The worker's exit status and its output; it must exit on its own."""
    worker = spawn(args, env, log)
    try:
        code = worker.wait(timeout=120)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError(f"the worker kept running:\n{log.read_text()[-4000:]}") from None
    return code, log.read_text()


def test_a_worker_whose_model_is_missing_exits_with_the_reason(tmp_path: Path):
    env = {
        **os.environ,
        # The embedded defaults (SQLite, a filesystem broker) in a data dir of its own, and an
        # empty Hugging Face cache: the real model's weights are nowhere.
        "DARKROOM_DATA_DIR": str(tmp_path / "data"),
        "DARKROOM_MODELS": "Qwen/Qwen-Image",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
    }
    code, output = _run_until_exit(["worker"], env, tmp_path / "worker.log")
    assert code == EXIT_CANNOT_START, output[-4000:]
    assert "worker cannot start: model 'Qwen/Qwen-Image' is not available" in output
    assert "worker ready" not in output


def test_a_worker_whose_gpu_group_cannot_be_built_exits_with_the_reason(tmp_path: Path):
    env = {**os.environ, "DARKROOM_DATA_DIR": str(tmp_path / "data"), "DARKROOM_MODELS": "tiny-wan"}
    args = ["worker", "--devices", "cpu,cpu", "--ulysses", "3"]
    code, output = _run_until_exit(args, env, tmp_path / "worker.log")
    assert code == EXIT_CANNOT_START, output[-4000:]
    assert output.startswith("darkroom worker: ") and "Traceback" not in output
