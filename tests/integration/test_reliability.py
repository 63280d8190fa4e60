"""Accepting work when parts are down, and never doing it twice: a job accepted while the broker
is unreachable still runs; an Idempotency-Key returns the first job; queue caps answer 429 with a
Retry-After the SDK honours; a cancel frees the worker within about one step; the time limit is
the worker's own."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from PIL import Image
from sqlalchemy import create_engine, select, update

from bench.processes import make_bucket, wait_until
from darkroom.keys import owner_of_key
from storage import jobs
from storage.models import Job, JobKind, JobStatus
from tests.stack import KEY_A, KEY_B, create_database, drop_database, private_redis_db, start_stack

# 200 steps over 65 frames of 96x96: many seconds of denoising even on a fast, idle machine (the
# time limit test needs it to outlast 1 s by a wide margin; 33 frames of 32x32 took 0.6 s here).
SLOW_VIDEO = {"model": "tiny-wan", "size": "96x96", "seconds": "8", "extra_body": {"num_inference_steps": 200}}


@pytest.fixture
def engine(stack):
    engine = create_engine(stack.env["DARKROOM_DATABASE_URL"])
    yield engine
    engine.dispose()


def _job(engine, job_id: str) -> Job:
    with engine.connect() as connection:
        return connection.execute(select(Job).where(Job.id == job_id)).one()



def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(buffer, "PNG")
    return buffer.getvalue()


def test_a_job_accepted_while_the_broker_is_unreachable_runs_once_the_sweeper_publishes_it(stack, spawn_api, engine):
    # This API process cannot reach any broker; the stack's sweeper can.
    base_url = spawn_api({"DARKROOM_BROKER_URL": "redis://127.0.0.1:1/0"})
    client = openai.OpenAI(base_url=base_url, api_key=KEY_A, max_retries=0)
    result = client.images.edit(
        model="tiny-qwen-image-edit", image=("a.png", _png(), "image/png"), prompt="x", response_format="url"
    )
    job_id = result.data[0].url.split("/images/")[1].split("/")[0]
    job = _job(engine, job_id)
    assert job.status == "completed" and job.published_at is not None
    assert "Sweep(published=1," in stack.log_path("sweeper").read_text()  # the sweeper published it


def test_the_same_idempotency_key_and_body_returns_the_first_job(client):
    headers = {"Idempotency-Key": "order-17-video"}
    first = client.videos.create(model="tiny-wan", prompt="idempotent", size="16x16", extra_headers=headers)
    again = client.videos.create(model="tiny-wan", prompt="idempotent", size="16x16", extra_headers=headers)
    assert again.id == first.id
    # Another key's identical request is its own job: keys are scoped to their caller.
    assert openai.OpenAI(base_url=str(client.base_url), api_key=KEY_B, max_retries=0).videos.create(
        model="tiny-wan", prompt="idempotent", size="16x16", extra_headers=headers
    ).id != first.id
    with pytest.raises(openai.ConflictError) as error:
        client.videos.create(model="tiny-wan", prompt="something else", size="16x16", extra_headers=headers)
    assert error.value.code == "idempotency_key_reused" and first.id in error.value.message


def test_concurrent_requests_with_one_idempotency_key_make_one_job(client):
    headers = {"Idempotency-Key": "burst-" + str(time.time_ns())}

    def create(_):
        return client.images.generate(
            model="tiny-qwen-image", prompt="burst", size="16x16", response_format="url", extra_headers=headers
        ).data[0].url

    with ThreadPoolExecutor(8) as pool:
        urls = set(pool.map(create, range(8)))
    assert len({url.split("/images/")[1].split("/")[0] for url in urls}) == 1


def test_past_the_queue_cap_submissions_get_429_with_retry_after(stack, spawn_api, engine):
    capped = spawn_api({"DARKROOM_MAX_QUEUED_JOBS_PER_KEY": "2", "DARKROOM_ADMISSION_RETRY_AFTER_S": "7"})
    waiting = []
    with engine.begin() as connection:
        # Two jobs of KEY_B's waiting in the queue (no message: nothing picks them up).
        for _ in range(2):
            job_id = jobs.new_job_id(JobKind.VIDEO)
            waiting.append(job_id)
            connection.execute(
                Job.__table__.insert().values(
                    id=job_id, kind="video", model="tiny-wan", status="queued", progress=0,
                    params={"prompt": "waiting", "seconds": "1", "width": 16, "height": 16},
                    input_keys=[], output_keys=[], output_meta={}, owner=owner_of_key(KEY_B), attempts=0,
                    timings={}, created_at=jobs.now(), published_at=jobs.now(),
                )
            )
    try:
        client_b = openai.OpenAI(base_url=capped, api_key=KEY_B, max_retries=0)
        with pytest.raises(openai.RateLimitError) as error:
            client_b.videos.create(model="tiny-wan", prompt="one too many")
        assert error.value.code == "too_many_queued_jobs"
        assert error.value.response.headers["retry-after"] == "7"
        # Key A has nothing queued and is not held back by key B's backlog.
        assert openai.OpenAI(base_url=capped, api_key=KEY_A, max_retries=0).videos.create(
            model="tiny-wan", prompt="fine", size="16x16"
        ).status == "queued"
    finally:
        with engine.begin() as connection:
            connection.execute(
                update(Job).where(Job.id.in_(waiting)).values(status=JobStatus.CANCELLED, deleted_at=jobs.now())
            )
    everyone = spawn_api({"DARKROOM_MAX_QUEUED_JOBS": "0"})
    with pytest.raises(openai.RateLimitError) as error:
        openai.OpenAI(base_url=everyone, api_key=KEY_A, max_retries=0).videos.create(model="tiny-wan", prompt="x")
    assert "The server has" in error.value.message


def test_a_cancel_stops_the_running_job_within_a_step_and_frees_the_worker(client, stack, engine):
    video = client.videos.create(prompt="long", **SLOW_VIDEO)
    wait_until(lambda: (job := _job(engine, video.id)).status == "in_progress" and job.progress > 0)
    cancelled_at = time.monotonic()
    client.videos.delete(video.id)
    follower = client.videos.create(model="tiny-wan", prompt="next", size="16x16", extra_body={"num_inference_steps": 1})
    follower = client.videos.poll(follower.id, poll_interval_ms=20)
    freed_after_s = time.monotonic() - cancelled_at
    job = _job(engine, video.id)
    assert (job.status, job.error_code, job.output_keys) == ("cancelled", "cancelled", [])
    assert follower.status == "completed"
    assert job.progress < 95  # stopped in the middle of denoising, not after it
    assert stack.stored_keys(f"outputs/{video.id}/") == []
    print(f"\ncancel: progress {job.progress}% at cancel; next job completed {freed_after_s * 1000:.0f} ms after DELETE")


@pytest.fixture(scope="module")
def limited_stack(tmp_path_factory, models_dir, s3_endpoint):
    """Its own database, broker db and bucket, with a job time limit of one second."""
    database_url = create_database()
    with private_redis_db() as broker_url:
        live = start_stack(
            tmp_path_factory.mktemp("limited"),
            database_url=database_url,
            broker_url=broker_url,
            s3_endpoint=s3_endpoint,
            bucket=make_bucket(s3_endpoint),
            models_dir=models_dir,
            overrides={"DARKROOM_JOB_TIME_LIMIT_S": "1"},
        )
        yield live
        live.close()
    drop_database(database_url)


def test_the_worker_enforces_the_job_time_limit_and_takes_the_next_job(limited_stack):
    client = limited_stack.client()
    video = client.videos.create_and_poll(prompt="too long", poll_interval_ms=50, **SLOW_VIDEO)
    assert video.status == "failed"
    assert video.error.code == "job_time_limit_exceeded" and "1 s" in video.error.message
    quick = client.videos.create_and_poll(model="tiny-wan", prompt="quick", size="16x16", poll_interval_ms=50)
    assert quick.status == "completed"
