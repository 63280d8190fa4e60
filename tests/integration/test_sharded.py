"""A sharded worker through the real queue: one Celery consumer whose pool child is rank 0 of a
two-rank gloo group (Ulysses 2) on tiny Qwen-Image. Its images equal an unsharded worker's for the
same seed; a follower rank killed mid-job fails that job with `worker_rank_lost`, and the worker
rebuilds its group and serves the next job.

A stack of its own, serving only tiny-qwen-image, on a Redis database of its own: the session
stack's unsharded worker must not take these jobs."""

from __future__ import annotations

import base64
import io
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, select

from bench.processes import WORKER_READY, make_bucket, wait_for_log, wait_until
from storage import jobs
from storage.db import make_session_factory
from storage.models import Job
from tests.stack import LiveStack, create_database, drop_database, private_redis_db, start_stack

MODEL = "tiny-qwen-image"
SHARDED = {"DARKROOM_DEVICES": "cpu,cpu", "DARKROOM_ULYSSES_DEGREE": "2"}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, models_dir, s3_endpoint) -> Iterator[LiveStack]:
    database_url = create_database()
    with private_redis_db() as broker_url:
        live = start_stack(
            tmp_path_factory.mktemp("sharded"),
            database_url=database_url,
            broker_url=broker_url,
            s3_endpoint=s3_endpoint,
            bucket=make_bucket(s3_endpoint),
            models_dir=models_dir,
            overrides={"DARKROOM_MODELS": MODEL, "DARKROOM_WARM_UP": "false"},
            workers=0,
        )
        try:
            live.start_worker("sharded", env=SHARDED)
            yield live
        finally:
            live.close()
    drop_database(database_url)


def _generate(stack: LiveStack, seed: int, steps: int = 4) -> Image.Image:
    result = stack.client().images.generate(
        model=MODEL,
        prompt="a lighthouse on a cliff at dusk",
        size="64x48",
        response_format="b64_json",
        extra_body={"seed": seed, "num_inference_steps": steps},
    )
    return Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).convert("RGB")


def _followers(worker_pid: int) -> list[int]:
    """The worker's rank processes (`python -m worker.rank_group ...`), grandchildren of it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            ancestors = _ancestors(int(entry.name))
        except (OSError, ValueError):
            continue
        if b"worker.rank_group" in cmdline and worker_pid in ancestors:
            found.append(int(entry.name))
    return found


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def _start_slow_job(stack: LiveStack, engine) -> Job:
    """A 200-step job in a thread (the images API waits for it); returns its row once it runs."""
    threading.Thread(
        target=_swallow, args=(lambda: _generate(stack, 3, steps=200),), daemon=True
    ).start()

    def running_job() -> Job | None:
        with engine.connect() as connection:
            job = connection.execute(select(Job).where(Job.status == "in_progress")).first()
        return job if job is not None and job.progress > 0 else None

    return wait_until(running_job, timeout_s=60, what="the slow job to make progress")


def _ended(engine, job_id: str) -> Job:
    def ended() -> Job | None:
        with engine.connect() as connection:
            row = connection.execute(select(Job).where(Job.id == job_id)).one()
        return row if row.status != "in_progress" else None

    return wait_until(ended, timeout_s=30, what="the job to end")


def test_a_cancel_stops_every_rank_at_the_same_step_and_the_group_serves_on(sharded):
    engine = create_engine(sharded.env["DARKROOM_DATABASE_URL"])
    worker = sharded.processes["sharded"]
    followers = _followers(worker.pid)
    job = _start_slow_job(sharded, engine)
    with make_session_factory(engine)() as session:
        assert jobs.cancel(session, job.id)  # as DELETE does; rank 0's monitor sees it
    wait_until(
        lambda: (
            "was cancelled or taken over while running" in sharded.log_path("sharded").read_text()
        ),
        timeout_s=30,
        what="the worker to stop the job",
    )
    assert _ended(engine, job.id).status == "cancelled"
    # The same ranks (no restart) run the next job.
    assert _generate(sharded, seed=4).size == (64, 48)
    assert _followers(worker.pid) == followers
    engine.dispose()


def test_a_follower_killed_mid_job_fails_it_and_the_worker_rebuilds_its_group(sharded):
    engine = create_engine(sharded.env["DARKROOM_DATABASE_URL"])
    worker = sharded.processes["sharded"]
    log = sharded.log_path("sharded")
    (follower,) = _followers(worker.pid)

    job = _start_slow_job(sharded, engine)
    offset = log.stat().st_size
    os.kill(follower, signal.SIGKILL)

    failed = _ended(engine, job.id)
    assert failed.status == "failed" and failed.error_code == "worker_rank_lost", failed
    assert "rank 1" in failed.error_message and "SIGKILL" in failed.error_message

    # The pool child left and a fresh one rebuilt the group: a new follower, and jobs run again.
    wait_for_log(log, WORKER_READY, worker, timeout=120, offset=offset)
    assert _followers(worker.pid) not in ([], [follower])
    assert _generate(sharded, seed=4).size == (64, 48)
    engine.dispose()


def test_sharded_images_equal_the_unsharded_workers_for_the_same_seed(sharded):
    with_group = np.asarray(_generate(sharded, seed=11), dtype=np.int16)
    sharded.kill("sharded")
    sharded.start_worker("plain")
    alone = np.asarray(_generate(sharded, seed=11), dtype=np.int16)
    assert with_group.shape == alone.shape == (48, 64, 3)
    assert int(np.abs(with_group - alone).max()) <= 1
    assert np.abs(with_group - alone).mean() < 0.01  # nearly every pixel identical


def _swallow(call) -> None:
    try:
        call()
    except Exception:
        pass  # the request ends with the job's failure; the test reads the job row
