"""Load: many concurrent clients submit a mix of tiny videos and images to two workers; every
accepted job completes exactly once and none is lost."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from bench.processes import make_bucket
from tests.chaos.harness import (
    TERMINAL,
    JobBook,
    by_scale,
    completions_in_logs,
    missing_outputs,
    output_sets,
    report,
)
from tests.stack import KEY_A, KEY_B

JOBS = by_scale(100, 1000)
CLIENTS = by_scale(16, 64)
# How long accepted jobs may take to reach a terminal state once every submission has returned.
SETTLE_S = by_scale(240, 1200)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(by_scale(480, 3600))]

_IMAGE_ID = re.compile(r"\b(img_[0-9a-f]+)\b")


def test_every_accepted_job_completes_exactly_once_under_load(launch, s3_endpoint):
    bucket = make_bucket(s3_endpoint)
    stack = launch(
        s3_endpoint=s3_endpoint,
        bucket=bucket,
        workers=2,
        overrides={
            "DARKROOM_MODELS": "tiny-wan,tiny-qwen-image",
            # The load is the point here, not admission control or the image wait bound.
            "DARKROOM_MAX_QUEUED_JOBS": "100000",
            "DARKROOM_MAX_QUEUED_JOBS_PER_KEY": "100000",
            "DARKROOM_IMAGE_WAIT_TIMEOUT_S": str(SETTLE_S + 600),
        },
    )
    book = JobBook(stack.env["DARKROOM_DATABASE_URL"])
    local = threading.local()
    made = itertools.count()

    def client() -> openai.OpenAI:
        if not hasattr(local, "client"):
            # Half the clients on each key; long timeouts, no retries: a refusal is a finding.
            key = (KEY_A, KEY_B)[next(made) % 2]
            local.client = stack.client(key, timeout=SETTLE_S + 900)
        return local.client

    def submit(index: int) -> tuple[str | None, str | None]:
        """(job id, error) for the index-th job: every fourth an image, the rest videos."""
        extra = {"num_inference_steps": 1, "seed": index}
        try:
            if index % 4 == 3:
                # Images answer synchronously; a URL answer names the job (`/v1/images/<id>/content`).
                result = client().images.generate(
                    model="tiny-qwen-image",
                    prompt=f"load {index}",
                    size="16x16",
                    response_format="url",
                    extra_body=extra,
                )
                return _IMAGE_ID.search(result.data[0].url).group(1), None
            video = client().videos.create(
                model="tiny-wan",
                prompt=f"load {index}",
                size="16x16",
                seconds="1",
                extra_body=extra,
            )
            return video.id, None
        except openai.APIStatusError as error:
            # Past the wait bound an image request answers 504 naming its job: accepted all the same.
            if error.status_code == 504 and (match := _IMAGE_ID.search(str(error.message))):
                return match.group(1), None
            return None, f"{error.status_code} {error.code}: {error.message}"
        except openai.APIError as error:
            return None, f"{type(error).__name__}: {error}"

    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(submit, range(JOBS)))
    submitted_s = time.monotonic() - started

    accepted = [job_id for job_id, _ in results if job_id is not None]
    errors = Counter(error for _, error in results if error is not None)
    returned_twice = [job_id for job_id, count in Counter(accepted).items() if count > 1]
    rows = book.wait_terminal(set(accepted), timeout_s=SETTLE_S)
    elapsed_s = time.monotonic() - started

    statuses = Counter(row.status for row in rows.values())
    lost = [
        job_id
        for job_id in set(accepted)
        if job_id not in rows or rows[job_id].status not in TERMINAL
    ]
    failures = Counter(row.error_code for row in rows.values() if row.status == "failed")
    all_rows = book.rows()
    unacknowledged = sorted(
        set(all_rows) - set(accepted)
    )  # jobs made for requests that saw an error
    sets = output_sets(s3_endpoint, bucket)
    completions = completions_in_logs(stack)
    duplicated = sorted(
        set(returned_twice)
        | {job_id for job_id, row in rows.items() if row.status == "completed" and row.attempts > 1}
        | {job_id for job_id, prefixes in sets.items() if len(prefixes) > 1}
        | {job_id for job_id, count in completions.items() if count > 1}
    )
    missing = missing_outputs(s3_endpoint, bucket, rows.values())
    book.dispose()

    report(
        "load",
        jobs=JOBS,
        clients=CLIENTS,
        accepted=len(accepted),
        refused=sum(errors.values()),
        completed=statuses["completed"],
        failed=statuses["failed"],
        lost=len(lost),
        duplicated=len(duplicated),
        submit_s=round(submitted_s, 1),
        total_s=round(elapsed_s, 1),
        jobs_per_s=round(statuses["completed"] / elapsed_s, 2),
    )
    assert not errors, f"submissions refused under load: {dict(errors)}"
    assert not lost, (
        f"{len(lost)} accepted jobs never finished, e.g. {[rows.get(i) for i in lost[:3]]}"
    )
    assert not duplicated, f"jobs run or returned twice: {duplicated[:10]}"
    assert statuses["completed"] == len(accepted), f"failed jobs: {dict(failures)}"
    assert not missing, f"completed jobs without their outputs: {dict(list(missing.items())[:5])}"
    assert not unacknowledged, f"jobs created for requests that got an error: {unacknowledged[:10]}"
