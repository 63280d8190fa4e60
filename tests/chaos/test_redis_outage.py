"""Redis stopped: clients keep submitting while the broker is down and every submission is still
accepted (the row is the truth; the sweeper publishes it later). Redis comes back empty, so the
messages it held are gone too; the sweeper republishes those, the worker reconnects by itself, and
every job completes once."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

import pytest
from redis import Redis

from bench.processes import descendants, make_bucket, wait_until
from tests.chaos.harness import (
    JobBook,
    by_scale,
    completions_in_logs,
    count_in_logs,
    missing_outputs,
    output_sets,
    report,
)
from tests.chaos.servers import RedisServer
from worker.celery_app import queue_for

OUTAGE_S = by_scale(6, 30)
BEFORE_S, AFTER_S = 3, 3  # clients submit this long before the outage and after Redis is back
SUBMITTERS = 2
PAUSE_S = 0.25  # between one client's submissions
SETTLE_S = by_scale(120, 300)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(by_scale(360, 1200))]


@dataclass
class Submission:
    started: float
    ended: float
    job_id: str | None
    status: str | None
    error: str | None


@pytest.fixture
def redis():
    server = RedisServer().start()
    yield server
    server.stop()


def test_submissions_during_a_redis_outage_are_accepted_and_all_jobs_complete(
    redis, launch, s3_endpoint
):
    # `redis` first: it is set up before the stack and torn down after it.
    bucket = make_bucket(s3_endpoint)
    stack = launch(
        s3_endpoint=s3_endpoint,
        bucket=bucket,
        broker_url=redis.url,
        workers=by_scale(1, 2),
        overrides={"DARKROOM_REPUBLISH_AFTER_S": "3"},
    )
    _run(stack, redis, bucket, s3_endpoint)


def _run(stack, redis: RedisServer, bucket: str, s3_endpoint: str) -> None:
    book = JobBook(stack.env["DARKROOM_DATABASE_URL"])
    submissions: list[Submission] = []
    submitting = threading.Event()
    submitting.set()

    def submit_steadily(client_index: int) -> None:
        client = stack.client(timeout=60)
        while submitting.is_set():
            started = time.monotonic()
            try:
                video = client.videos.create(
                    model="tiny-wan",
                    prompt=f"redis {client_index}",
                    size="16x16",
                    seconds="1",
                    extra_body={"num_inference_steps": 1},
                )
                submissions.append(
                    Submission(started, time.monotonic(), video.id, video.status, None)
                )
            except Exception as error:  # noqa: BLE001 - every refusal is asserted on below
                submissions.append(Submission(started, time.monotonic(), None, None, repr(error)))
            time.sleep(PAUSE_S)

    clients = [
        threading.Thread(target=submit_steadily, args=(index,), daemon=True)
        for index in range(SUBMITTERS)
    ]
    for thread in clients:
        thread.start()
    time.sleep(BEFORE_S)
    # Hold the workers until messages wait in Redis: they go with it, and only the sweeper's
    # republish brings their jobs back (the workers alone may keep the queue empty).
    _signal_workers(stack, signal.SIGSTOP)
    broker = Redis.from_url(redis.url)
    backlog = wait_until(
        lambda: (waiting := broker.llen(queue_for("tiny-wan"))) >= 3 and waiting, what="a backlog in Redis"
    )
    redis.stop()
    down_at = time.monotonic()
    _signal_workers(stack, signal.SIGCONT)
    time.sleep(OUTAGE_S)
    redis.start()  # same port, empty
    up_at, up_wall = time.monotonic(), time.time()
    time.sleep(AFTER_S)
    submitting.clear()
    for thread in clients:
        thread.join()

    accepted = [item.job_id for item in submissions if item.job_id is not None]
    rows = book.wait_terminal(accepted, timeout_s=SETTLE_S)
    done_at = max(
        (row.completed_at.timestamp() for row in rows.values() if row.completed_at),
        default=time.time(),
    )
    book.dispose()

    during = [item for item in submissions if down_at <= item.started < up_at]
    refused = [item for item in submissions if item.error is not None or item.status != "queued"]
    lost = [
        job_id for job_id in accepted if job_id not in rows or rows[job_id].status != "completed"
    ]
    completions = completions_in_logs(stack)
    run_twice = {job_id: completions[job_id] for job_id in accepted if completions[job_id] > 1}
    sets = output_sets(s3_endpoint, bucket)
    many_sets = {
        job_id: sorted(sets[job_id]) for job_id in accepted if len(sets.get(job_id, ())) > 1
    }
    missing = missing_outputs(s3_endpoint, bucket, rows.values())
    republished = count_in_logs(stack, r"publishing it again", "sweeper")
    report(
        "redis-outage",
        outage_s=round(up_at - down_at, 1),
        submitted=len(submissions),
        submitted_during_outage=len(during),
        refused=len(refused),
        slowest_submit_during_outage_s=max(
            (item.ended - item.started for item in during), default=0.0
        ),
        completed=sum(row.status == "completed" for row in rows.values()),
        lost=len(lost),
        duplicated=len(run_twice) + len(many_sets),
        republished=republished,
        redis_back_to_all_completed_s=round(done_at - up_wall, 1),
    )
    assert during, "no submission was made while Redis was down"
    assert not refused, (
        f"submissions refused or not queued: {[(i.status, i.error) for i in refused[:5]]}"
    )
    assert not lost, (
        f"{len(lost)} jobs did not complete after Redis came back, e.g. "
        f"{[(j, rows[j].status, rows[j].error_code) for j in lost[:5] if j in rows]}"
    )
    assert not run_twice and not many_sets, f"jobs run twice: {run_twice} {many_sets}"
    assert republished >= backlog, f"{backlog} messages were lost with Redis, {republished} republished"
    assert not missing, f"completed jobs without their outputs: {missing}"


def _signal_workers(stack, signum: int) -> None:
    for name, process in stack.processes.items():
        if name.startswith("worker"):
            for pid in [process.pid, *descendants(process.pid)]:
                os.kill(pid, signum)
