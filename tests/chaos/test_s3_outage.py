"""S3 stopped during upload. A: the store comes back within the worker's upload retry window, so
the jobs complete and their outputs download through the API (a job is never `completed` without
its output). B: the store stays down past the window, so the job fails `output_upload_failed`
within a bounded time instead of hanging or completing empty.

One stack serves both cases with two workers started together: the tiny-wan worker retries
uploads for 60 s (case A, videos), the tiny-qwen-image worker for 3 s (case B, images, which also
shows how a synchronous image request reports the failure). Only text-to-video and text-to-image
jobs are used: they read no inputs, so the API can accept them while S3 is down."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.chaos.harness import (
    TERMINAL,
    JobBook,
    by_scale,
    calibrate_steps,
    count_in_logs,
    missing_outputs,
    output_sets,
    report,
    submit_denoising,
)
from tests.chaos.servers import MotoServer

JOBS_A = by_scale(3, 8)
OUTAGE_A_S = by_scale(5, 20)
WINDOW_A_S = 60
JOBS_B = by_scale(2, 4)
WINDOW_B_S = 3
# Case B's requests must be answered (their jobs failed) within this; they need about the window each.
BOUND_B_S = 45
DENOISE_S = 1.5
SETTLE_S = by_scale(120, 300)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(by_scale(420, 1200))]


@pytest.fixture
def moto():
    server = MotoServer().start()
    yield server
    server.stop()


def test_outputs_survive_an_s3_restart_and_a_lasting_outage_fails_the_job(moto, launch):
    # `moto` first: it is set up before the stack and torn down after it.
    stack = launch(
        s3_endpoint=moto.endpoint,
        bucket=moto.bucket,
        workers=0,
        overrides={"DARKROOM_MODELS": "tiny-wan,tiny-qwen-image"},
    )
    workers = {
        "worker-video": {
            "DARKROOM_MODELS": "tiny-wan",
            "DARKROOM_UPLOAD_RETRY_WINDOW_S": str(WINDOW_A_S),
        },
        "worker-image": {
            "DARKROOM_MODELS": "tiny-qwen-image",
            "DARKROOM_UPLOAD_RETRY_WINDOW_S": str(WINDOW_B_S),
        },
    }
    with ThreadPoolExecutor(len(workers)) as pool:
        list(pool.map(lambda item: stack.start_worker(item[0], env=item[1]), workers.items()))
    book = JobBook(stack.env["DARKROOM_DATABASE_URL"])
    try:
        _case_a(stack, book, moto)
        _case_b(stack, book, moto)
    finally:
        book.dispose()


def _case_a(stack, book: JobBook, moto: MotoServer) -> None:
    """Stop S3 while jobs denoise, bring it back (empty, same port) within the retry window."""
    client = stack.client(timeout=60)
    steps = calibrate_steps(client, book, target_s=DENOISE_S)
    # No job of this case may finish before the outage: moto forgets everything when it stops.
    accepted = submit_denoising(client, book, prompt="s3", count=JOBS_A, steps=steps)
    finished_early = [row.id for row in book.rows(accepted).values() if row.status in TERMINAL]
    moto.stop()
    down_at = time.monotonic()
    time.sleep(OUTAGE_A_S)
    moto.start()
    up_at, up_wall = time.monotonic(), time.time()

    rows = book.wait_terminal(accepted, timeout_s=SETTLE_S)
    missing = missing_outputs(moto.endpoint, moto.bucket, rows.values())
    sets = output_sets(moto.endpoint, moto.bucket)
    undownloadable = {}
    for job_id in accepted:
        if rows[job_id].status == "completed":
            try:
                mp4 = client.videos.download_content(job_id).read()
                if mp4[4:8] != b"ftyp":
                    undownloadable[job_id] = f"not an MP4: {mp4[:16]!r}"
            except openai.APIError as error:
                undownloadable[job_id] = repr(error)
    completed = [job_id for job_id in accepted if rows[job_id].status == "completed"]
    retries = count_in_logs(stack, r"upload of \S+ failed", "worker-video")
    report(
        "s3-outage-A",
        jobs=len(accepted),
        outage_s=round(up_at - down_at, 1),
        retry_window_s=WINDOW_A_S,
        upload_retries=retries,
        completed=len(completed),
        failed=sum(rows[job_id].status == "failed" for job_id in accepted),
        downloadable=len(completed) - len(undownloadable),
        s3_back_to_all_completed_s=round(
            max((rows[job_id].completed_at.timestamp() for job_id in completed), default=up_wall)
            - up_wall,
            1,
        ),
    )
    assert not finished_early, f"jobs finished before the outage began: {finished_early}"
    assert retries >= 1, "no upload was attempted while S3 was down: the outage missed the uploads"
    assert len(completed) == len(accepted), {
        j: (rows[j].status, rows[j].error_code) for j in accepted
    }
    assert not missing, f"completed jobs without their outputs: {missing}"
    assert not undownloadable, f"outputs that did not download through the API: {undownloadable}"
    assert all(len(sets[job_id]) == 1 for job_id in completed), {
        j: sorted(sets[j]) for j in completed
    }


def _case_b(stack, book: JobBook, moto: MotoServer) -> None:
    """S3 goes down and stays down: each job fails `output_upload_failed` after the window, and
    the synchronous image request answers with that error."""
    moto.stop()
    client = stack.client(timeout=BOUND_B_S)

    def generate(index: int) -> tuple[float, str]:
        started = time.monotonic()
        try:
            client.images.generate(
                model="tiny-qwen-image",
                prompt=f"s3 down {index}",
                size="16x16",
                extra_body={"num_inference_steps": 1, "seed": index},
            )
            answer = "200 while S3 is down"
        except openai.APIStatusError as error:
            answer = f"{error.status_code} {error.code}"
        except openai.APIError as error:
            answer = type(error).__name__
        return time.monotonic() - started, answer

    with ThreadPoolExecutor(JOBS_B) as pool:
        answers = list(pool.map(generate, range(JOBS_B)))
    # This case's jobs are the stack's only image jobs.
    image_ids = [job_id for job_id in book.rows() if job_id.startswith("img_")]
    rows = book.wait_terminal(image_ids, timeout_s=5)
    outcomes = Counter(
        f"{row.status}/{row.error_code}/attempt{row.attempts}" for row in rows.values()
    )
    report(
        "s3-outage-B",
        jobs=len(image_ids),
        retry_window_s=WINDOW_B_S,
        completed=sum(row.status == "completed" for row in rows.values()),
        failed=sum(row.status == "failed" for row in rows.values()),
        outcomes=",".join(f"{outcome}:{n}" for outcome, n in sorted(outcomes.items())),
        answers=",".join(
            f"{answer.replace(' ', '_')}:{n}"
            for answer, n in Counter(a for _, a in answers).items()
        ),
        answer_max_s=max(seconds for seconds, _ in answers),
    )
    assert len(image_ids) == JOBS_B, f"{len(image_ids)} image jobs made for {JOBS_B} requests"
    assert all(
        (row.status, row.error_code) == ("failed", "output_upload_failed") for row in rows.values()
    ), f"jobs not failed output_upload_failed within {BOUND_B_S} s: {dict(outcomes)}"
    assert all(answer == "500 output_upload_failed" for _, answer in answers), answers
