"""The embedded default: `darkroom run` with nothing configured serves the API and a worker on a
SQLite file, a local blob directory and a filesystem broker, all under the data dir; it keeps
serving through a bad broker file and a dead child, and its children never outlive it."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from PIL import Image

from bench.processes import (
    WORKER_READY,
    descendants,
    free_port,
    parent_of,
    spawn,
    still_running,
    stop,
    wait_for_log,
    wait_for_port,
    wait_until,
)
from darkroom.processes import EXIT_CANNOT_START
from worker.celery_app import queue_for


@dataclass
class Run:
    process: subprocess.Popen
    port: int
    data_dir: Path
    log: Path

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key="anything", max_retries=0)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def _start_run(tmp_path: Path, models_dir: Path, **env: str) -> Run:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DARKROOM_")}
    environment |= {"DARKROOM_DATA_DIR": str(tmp_path / "data"), "DARKROOM_MODELS_DIR": str(models_dir), **env}
    port = free_port()
    log = tmp_path / "run.log"
    process = spawn(["run", "--port", str(port)], environment, log)
    return Run(process, port, tmp_path / "data", log)


@pytest.fixture
def embedded(tmp_path, models_dir) -> Iterator[Run]:
    run = _start_run(tmp_path, models_dir)
    try:
        wait_for_port(run.port, run.process)
        wait_for_log(run.log, WORKER_READY, run.process)
        yield run
    finally:
        stop(run.process)


@pytest.fixture
def small_embedded(tmp_path, models_dir) -> Iterator[Run]:
    """`darkroom run` serving tiny-wan only, which starts in seconds, and quick to call a run lost."""
    run = _start_run(
        tmp_path,
        models_dir,
        DARKROOM_MODELS="tiny-wan",
        DARKROOM_HEARTBEAT_INTERVAL_S="0.2",
        DARKROOM_WORKER_LOST_AFTER_S="3",
        DARKROOM_SWEEP_INTERVAL_S="0.2",
    )
    try:
        wait_for_log(run.log, WORKER_READY, run.process)
        yield run
    finally:
        stop(run.process)


def test_core_flow_on_the_embedded_default(embedded):
    assert "API is open" in embedded.text()
    client = embedded.client()

    video = client.videos.create_and_poll(model="tiny-wan", prompt="embedded", seconds="1", poll_interval_ms=50)
    assert (video.status, video.progress) == ("completed", 100)
    assert client.videos.download_content(video.id).read()[4:8] == b"ftyp"

    image = client.images.generate(model="tiny-qwen-image", prompt="embedded", size="32x32")
    assert Image.open(io.BytesIO(base64.b64decode(image.data[0].b64_json))).size == (32, 32)

    assert (embedded.data_dir / "darkroom.db").is_file()
    assert (embedded.data_dir / "blobs" / "outputs" / video.id / "1" / "video.mp4").is_file()
    assert [v.id for v in client.videos.list()] == [video.id]

    # Having run both, the worker's parent still holds no torch: only its pool child loaded one.
    [worker] = [pid for pid in _children(embedded) if _command(pid)[-1] == "worker"]
    [pool_child] = [pid for pid in descendants(worker) if parent_of(pid) == worker]
    assert "libtorch" not in Path(f"/proc/{worker}/maps").read_text()
    assert "libtorch" in Path(f"/proc/{pool_child}/maps").read_text()


def _video_completes(run: Run) -> None:
    video = run.client().videos.create_and_poll(model="tiny-wan", prompt="x", seconds="1", poll_interval_ms=50)
    assert video.status == "completed", video.error


def test_an_unreadable_broker_message_is_set_aside_and_the_stack_serves_on(small_embedded):
    run = small_embedded
    (run.data_dir / "broker" / f"0_empty.{queue_for('tiny-wan')}.msg").write_bytes(b"")
    wait_for_log(run.log, "is not readable (0 bytes); moved to", run.process)
    _video_completes(run)
    assert "exited with" not in run.text()
    assert (run.data_dir / "broker" / "rejected" / f"0_empty.{queue_for('tiny-wan')}.msg").exists()


def test_a_worker_killed_mid_job_is_restarted_and_runs_the_job_again(small_embedded):
    run = small_embedded
    client = run.client()
    video = client.videos.create(
        model="tiny-wan", prompt="long", size="96x96", seconds="8", extra_body={"num_inference_steps": 200}
    )
    wait_until(lambda: client.videos.retrieve(video.id).progress > 0, timeout_s=60, what="the job's first steps")
    [worker] = [pid for pid in _children(run) if _command(pid)[-1] == "worker"]
    pool_child = descendants(worker)
    os.kill(worker, signal.SIGKILL)

    wait_until(lambda: not still_running(pool_child), timeout_s=30, what="the pool child's end")
    wait_for_log(run.log, f"worker (pid {worker}) exited with signal SIGKILL", run.process)
    wait_until(lambda: run.text().count(WORKER_READY) == 2, timeout_s=120, what="the worker's restart")
    done = wait_until(
        lambda: (job := client.videos.retrieve(video.id)).status in ("completed", "failed") and job,
        timeout_s=300,
        what="the job's end",
    )
    assert done.status == "completed", done.error
    # Its first run died with the worker (the pool child goes with it); the sweeper requeued it,
    # and the new worker ran it as attempt 2.
    assert (run.data_dir / "blobs" / "outputs" / video.id / "2" / "video.mp4").is_file()
    assert run.process.poll() is None


def test_sigterm_stops_every_child_within_the_bound_and_says_so(small_embedded):
    run = small_embedded
    family = descendants(run.process.pid)
    assert len(family) >= 3  # the worker, its pool child, the webhook worker
    run.process.send_signal(signal.SIGTERM)
    assert run.process.wait(timeout=60) == 0
    assert not still_running(family)
    text = run.text()
    for line in ("SIGTERM received; stopping", "stopping worker (pid", "worker stopped", "stopped (exit status 0)"):
        assert line in text


def test_the_children_of_a_killed_run_go_with_it(small_embedded):
    run = small_embedded
    family = descendants(run.process.pid)
    run.process.kill()
    run.process.wait()
    # SIGTERM from the kernel: an idle worker's warm shutdown takes a few seconds.
    wait_until(lambda: not still_running(family), timeout_s=60, what="the children's exit")


def test_a_worker_that_refuses_to_start_stops_the_run_with_its_status(tmp_path, models_dir):
    # The real model's weights are nowhere: the worker exits with EX_CONFIG, and so does the run.
    run = _start_run(tmp_path, models_dir, DARKROOM_MODELS="Qwen/Qwen-Image", HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    try:
        code = run.process.wait(timeout=180)
    finally:
        stop(run.process)
    text = run.text()
    assert code == EXIT_CANNOT_START, text[-4000:]
    assert "worker cannot start: model 'Qwen/Qwen-Image' is not available" in text
    assert "worker refused to start" in text and "stopped (exit status 78)" in text


def _children(run: Run) -> list[int]:
    return [pid for pid in descendants(run.process.pid) if parent_of(pid) == run.process.pid]


def _command(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
