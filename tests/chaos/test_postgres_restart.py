"""Postgres restarted while jobs run: a private cluster is stopped under a running stack. While it
is down the API answers 503 `database_unavailable` (never a 500, never a hang); once it is back the
same API process answers again, and every job accepted before the outage completes."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import openai
import pytest

from bench.processes import make_bucket
from tests.chaos.harness import (
    JobBook,
    by_scale,
    calibrate_steps,
    completions_in_logs,
    count_in_logs,
    missing_outputs,
    report,
    submit_denoising,
    wait_until,
)
from tests.chaos.servers import PostgresServer
from tests.stack import KEY_A

JOBS = by_scale(4, 12)
OUTAGE_S = by_scale(4, 15)
DENOISE_S = 1.5
SETTLE_S = by_scale(120, 300)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(by_scale(360, 1200))]


@pytest.fixture
def postgres():
    server = PostgresServer().init()
    server.start()
    yield server
    server.destroy()


def test_the_api_answers_503_while_postgres_is_down_and_every_job_completes_after(
    postgres, launch, s3_endpoint
):
    # `postgres` first: it is set up before the stack and torn down after it.
    bucket = make_bucket(s3_endpoint)
    stack = launch(s3_endpoint=s3_endpoint, bucket=bucket, admin_url=postgres.admin_url, workers=1)
    book = JobBook(stack.env["DARKROOM_DATABASE_URL"])
    client = stack.client()
    steps = calibrate_steps(client, book, target_s=DENOISE_S)
    accepted = submit_denoising(client, book, prompt="pg", count=JOBS, steps=steps)
    before = book.rows(accepted)

    postgres.stop("fast")
    down_at = time.monotonic()
    answers = _probe_while_down(stack, accepted[0], OUTAGE_S)
    postgres.start()
    up_at, up_wall = time.monotonic(), time.time()
    recovered_at = wait_until(
        lambda: _api_answers(stack, accepted[0]), timeout_s=60, interval_s=0.1, what="the API"
    )
    after = client.videos.create(
        model="tiny-wan",
        prompt="pg after",
        size="16x16",
        seconds="1",
        extra_body={"num_inference_steps": 1},
    ).id

    rows = book.wait_terminal([*accepted, after], timeout_s=SETTLE_S)
    completions = completions_in_logs(stack)
    missing = missing_outputs(stack.env["DARKROOM_S3_ENDPOINT_URL"], bucket, rows.values())
    book.dispose()

    lost = [job_id for job_id in accepted if rows[job_id].status != "completed"]
    bad_answers = Counter(answer for answer in answers if answer != "503 database_unavailable")
    running_at_outage = sum(row.status == "in_progress" for row in before.values())
    report(
        "postgres-restart",
        jobs=len(accepted),
        running_at_outage=running_at_outage,
        outage_s=round(up_at - down_at, 1),
        answers_during_outage=len(answers),
        answers_503=len(answers) - sum(bad_answers.values()),
        other_answers=",".join(
            f"{answer.replace(' ', '_')}:{n}" for answer, n in bad_answers.items()
        )
        or 0,
        recovery_s=round(recovered_at - up_at, 2),
        completed=sum(rows[job_id].status == "completed" for job_id in accepted),
        lost=len(lost),
        requeued=sum(rows[job_id].attempts > 1 for job_id in accepted),
        republished=count_in_logs(stack, r"publishing it again", "sweeper"),
        back_to_all_completed_s=round(
            max(r.completed_at.timestamp() for r in rows.values() if r.completed_at) - up_wall, 1
        ),
    )
    assert answers, "the API was not asked anything during the outage"
    assert not bad_answers, (
        f"answers other than 503 database_unavailable during the outage: {dict(bad_answers)}"
    )
    assert not lost, (
        f"jobs accepted before the outage that did not complete: {[(j, rows[j].status, rows[j].error_code) for j in lost]}"
    )
    assert rows[after].status == "completed", "a job submitted after the outage did not complete"
    twice = {job_id: count for job_id, count in completions.items() if count > 1}
    assert not twice, f"jobs completed twice: {twice}"
    assert not missing, f"completed jobs without their outputs: {missing}"


def _probe_while_down(stack, job_id: str, duration_s: float) -> list[str]:
    """Ask the API to read a job and to create one, over and over, for `duration_s`; each answer
    as '<status> <error code>' (or the exception's name when there was no HTTP answer)."""
    client = stack.client(timeout=10)
    answers: list[str] = []
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        for call in (
            lambda: client.videos.retrieve(job_id),
            lambda: client.videos.create(
                model="tiny-wan", prompt="during", size="16x16", seconds="1"
            ),
        ):
            try:
                call()
                answers.append("200 during the outage")
            except openai.APIStatusError as error:
                answers.append(f"{error.status_code} {error.code}")
            except openai.APIError as error:
                answers.append(type(error).__name__)
        time.sleep(0.1)
    return answers


def _api_answers(stack, job_id: str) -> float | None:
    """The time the API answered a read with 200, or None."""
    try:
        response = httpx.get(
            f"{stack.base_url}/videos/{job_id}",
            headers={"authorization": f"Bearer {KEY_A}"},
            timeout=5,
        )
    except httpx.HTTPError:
        return None
    return time.monotonic() if response.status_code == 200 else None
