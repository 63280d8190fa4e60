"""kill -9 mid-denoise: a worker (Celery parent and its pool child) is SIGKILLed while its job is
denoising, then restarted, again and again, while a second worker keeps serving. The sweeper sees
the heartbeat stop, requeues the job, and it completes exactly once, with one output set."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from bench.processes import make_bucket
from tests.chaos.harness import (
    TERMINAL,
    JobBook,
    by_scale,
    calibrate_steps,
    completions_in_logs,
    missing_outputs,
    output_sets,
    percentile,
    report,
    worker_name_of,
)

KILLS = by_scale(3, 20)
DENOISE_S = 1.0  # each job denoises about this long, so a kill lands mid-denoise
OUTSTANDING = 3  # queued + running jobs the feeder keeps in the system while kills remain
SETTLE_S = by_scale(120, 300)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(by_scale(480, 2400))]


def test_a_worker_killed_mid_denoise_loses_no_job_and_runs_none_twice(launch, s3_endpoint):
    bucket = make_bucket(s3_endpoint)
    stack = launch(
        s3_endpoint=s3_endpoint,
        bucket=bucket,
        workers=2,
        overrides={
            "DARKROOM_WORKER_LOST_AFTER_S": "2",
            "DARKROOM_HEARTBEAT_INTERVAL_S": "0.2",
            "DARKROOM_SWEEP_INTERVAL_S": "0.2",
            "DARKROOM_MAX_ATTEMPTS": "5",  # a job hit by two kills still completes
        },
    )
    book = JobBook(stack.env["DARKROOM_DATABASE_URL"])
    client = stack.client()
    steps = calibrate_steps(client, book, target_s=DENOISE_S)

    submitted: list[str] = []
    feeding = threading.Event()
    feeding.set()
    feed_errors: list[str] = []

    def feed() -> None:
        """Keep a few jobs queued or running, so a worker always has one to be killed in."""
        while feeding.is_set():
            try:
                rows = book.rows(submitted)
                if (
                    sum(row.status in ("queued", "in_progress") for row in rows.values())
                    < OUTSTANDING
                ):
                    video = client.videos.create(
                        model="tiny-wan",
                        prompt=f"kill {len(submitted)}",
                        size="32x32",
                        seconds="1",
                        extra_body={"num_inference_steps": steps, "seed": len(submitted)},
                    )
                    submitted.append(video.id)
                    continue
            except Exception as error:  # noqa: BLE001 - reported and asserted on below
                feed_errors.append(repr(error))
            time.sleep(0.1)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()

    kills: list[tuple[str, str, float]] = []  # (job id, worker name, wall-clock time of the kill)
    # Kills that landed after their job had completed (a loaded machine can deschedule this thread
    # between seeing the job denoise and the kill): the job may then be logged 0 times, its worker
    # killed between its completing write and its log line. They do not count as kills.
    late: list[str] = []
    restart_s: list[float] = []
    try:
        while len(kills) < KILLS:
            job_id, name = _wait_for_a_denoising_job(stack, book, submitted)
            stack.kill(name)
            if book.rows([job_id])[job_id].status == "completed":
                late.append(job_id)
            else:
                kills.append((job_id, name, time.time()))
            started = time.monotonic()
            stack.start_worker(name)
            restart_s.append(time.monotonic() - started)
    finally:
        feeding.clear()
        feeder.join()

    rows = book.wait_terminal(submitted, timeout_s=SETTLE_S)
    completions = completions_in_logs(stack)
    sets = output_sets(s3_endpoint, bucket)
    missing = missing_outputs(s3_endpoint, bucket, rows.values())
    book.dispose()

    not_completed = {
        job_id: (row.status, row.error_code)
        for job_id, row in rows.items()
        if row.status != "completed"
    }
    lost = [
        job_id for job_id in submitted if job_id not in rows or rows[job_id].status not in TERMINAL
    ]
    logged_wrong = {
        job_id: completions[job_id]
        for job_id in submitted
        if completions[job_id] != 1 and not (job_id in late and completions[job_id] == 0)
    }
    sets_wrong = {
        job_id: sorted(sets.get(job_id, ()))
        for job_id in submitted
        if len(sets.get(job_id, ())) != 1
    }
    requeued = [job_id for job_id, row in rows.items() if row.attempts > 1]
    recovery_s = [
        rows[job_id].completed_at.timestamp() - killed_at
        for job_id, _, killed_at in kills
        if rows[job_id].completed_at is not None
    ]
    report(
        "kill-9",
        kills=len(kills),
        late_kills=len(late),
        jobs=len(submitted),
        steps=steps,
        completed=sum(row.status == "completed" for row in rows.values()),
        lost=len(lost),
        requeued=len(requeued),
        max_attempts=max((row.attempts for row in rows.values()), default=0),
        recovery_p50_s=percentile(recovery_s, 50),
        recovery_max_s=max(recovery_s, default=float("nan")),
        restart_p50_s=percentile(restart_s, 50),
    )
    assert not feed_errors, f"submissions failed: {feed_errors[:5]}"
    assert not lost, f"jobs never finished: {lost}"
    assert not not_completed, f"jobs that did not complete: {not_completed}"
    assert not logged_wrong, f"jobs not logged completed exactly once: {logged_wrong}"
    assert not sets_wrong, f"jobs without exactly one output set: {sets_wrong}"
    assert not missing, f"completed jobs without their outputs: {missing}"
    # Each killed job was taken over by a later attempt.
    assert all(rows[job_id].attempts >= 2 for job_id, _, _ in kills), [
        (j, rows[j].attempts) for j, _, _ in kills
    ]


def _wait_for_a_denoising_job(
    stack, book: JobBook, submitted: list[str], timeout_s: float = 120
) -> tuple[str, str]:
    """A job some live worker of this stack is denoising right now (progress between the first
    step and the end of denoising, a fresh heartbeat), and that worker's name."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = datetime.now(UTC) - timedelta(seconds=1)
        for job_id, row in book.rows(list(submitted)).items():
            if (
                row.status == "in_progress"
                and 0 < row.progress < 90
                and row.heartbeat_at
                and row.heartbeat_at > fresh
            ):
                name = worker_name_of(stack, row.worker)
                if name is not None:
                    return job_id, name
        time.sleep(0.03)
    raise TimeoutError(f"no job was seen denoising within {timeout_s:g} s")
