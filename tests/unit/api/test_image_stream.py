"""The streamed image response as it follows a job row (real SQLite by the migrations, a real
local blob store), stepped one event at a time: partial images in order with contiguous indices,
a requeued job's repeated previews not sent twice, and every bad end an `error` event the SDK's
decoder turns into an exception."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from api.deps import Services
from api.image_fetch import FetchSlots
from api.image_stream import _EventFields, _events
from darkroom.settings import Settings
from storage import jobs
from storage.blobs import LocalBlobStore
from storage.models import JobKind

FIELDS = _EventFields(prefix="image_generation", size="32x16", output_format="png", quality="auto",
                      safety_identifier=None)


@pytest.fixture
def services(tmp_path, sessions):
    settings = Settings(data_dir=tmp_path)
    return Services(settings=settings, sessions=sessions, blobs=LocalBlobStore(tmp_path / "blobs"), celery=None,
                    started_at=0, image_fetches=FetchSlots(settings))


def _running_job(services) -> tuple[str, int]:
    with services.sessions() as session:
        job_id = jobs.new_job_id(JobKind.IMAGE_GENERATION)
        jobs.create(session, job_id=job_id, kind=JobKind.IMAGE_GENERATION, model="tiny-qwen-image", owner="o",
                    params={})
        session.commit()
        return job_id, jobs.claim(session, job_id, "w").attempts


def _preview(services, job_id: str, attempt: int, keys: list[str]) -> None:
    for key in keys:
        services.blobs.put(key, key.encode(), "image/png")
    with services.sessions() as session:
        assert jobs.record_partials(session, job_id, attempt=attempt, partial_keys=keys)


@pytest.fixture
def loop():
    """One event loop for a test, so a stream lives across the steps the test takes."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _next(loop, events) -> tuple[str, dict]:
    text = loop.run_until_complete(asyncio.wait_for(anext(events), timeout=10))
    lines = dict(line.split(": ", 1) for line in text.strip().split("\n"))
    return lines["event"], json.loads(lines["data"])


def test_partials_then_completed_and_a_requeued_jobs_previews_are_not_sent_twice(services, loop):
    job_id, attempt = _running_job(services)
    events = _events(services, job_id, FIELDS)
    _preview(services, job_id, attempt, [f"p/{attempt}/0"])
    event, data = _next(loop, events)
    assert (event, data["type"], data["partial_image_index"]) == ("image_generation.partial_image",) * 2 + (0,)
    assert data["b64_json"] == "cC8xLzA="  # base64 of the stored bytes "p/1/0"
    # Its worker vanished: the next attempt starts over and makes previews 0 and 1 again.
    with services.sessions() as session:
        assert jobs.requeue(session, job_id, attempt=attempt)
        attempt = jobs.claim(session, job_id, "w2").attempts
    _preview(services, job_id, attempt, [f"p/{attempt}/0", f"p/{attempt}/1"])
    event, data = _next(loop, events)
    assert (data["partial_image_index"], data["b64_json"]) == (1, "cC8yLzE=")  # "p/2/1": only the new one
    services.blobs.put("out", b"final", "image/png")
    with services.sessions() as session:
        assert jobs.complete(session, job_id, attempt=attempt, output_keys=["out"], output_meta={}, timings={},
                             retention=timedelta(hours=1))
    event, data = _next(loop, events)
    assert event == data["type"] == "image_generation.completed"
    assert (data["b64_json"], data["size"], data["usage"]["total_tokens"]) == ("ZmluYWw=", "32x16", 0)
    with pytest.raises(StopAsyncIteration):
        _next(loop, events)


def test_a_failed_job_ends_the_stream_with_its_error(services, loop):
    job_id, attempt = _running_job(services)
    events = _events(services, job_id, FIELDS)
    with services.sessions() as session:
        assert jobs.fail(session, job_id, code="generation_failed", message="CUDA out of memory", attempt=attempt)
    event, data = _next(loop, events)
    assert event == "error" and data["error"]["code"] == "generation_failed"
    assert "CUDA out of memory" in data["error"]["message"] and job_id in data["error"]["message"]


def test_past_the_wait_bound_and_when_the_store_is_gone_the_stream_ends_with_an_error(services, loop, tmp_path):
    job_id, _ = _running_job(services)
    services.settings = Settings(data_dir=tmp_path, image_wait_timeout_s=0)
    event, data = _next(loop, _events(services, job_id, FIELDS))
    assert (event, data["error"]["code"]) == ("error", "image_job_timeout")
    assert f"GET /v1/images/{job_id}" in data["error"]["message"]

    # Completed, but its image is not in the store: an error, never a silent end.
    with services.sessions() as session:
        assert jobs.complete(session, job_id, output_keys=["missing"], output_meta={}, timings={},
                             retention=timedelta(hours=1))
    event, data = _next(loop, _events(services, job_id, FIELDS))
    assert (event, data["error"]["code"]) == ("error", "stream_interrupted")
