"""The worker's side of streamed images, on a real SQLite database built by the migrations and a
real local blob store: previews are stored and recorded in order before the job can complete, a
preview that cannot be stored never fails the job, and only the attempt that owns the job records
any."""

from __future__ import annotations

import io
from datetime import timedelta

from PIL import Image

from storage import jobs
from storage.blobs import LocalBlobStore
from storage.models import Job, JobKind
from worker.previews import PreviewPublisher

IMAGE = Image.new("RGB", (32, 16), (10, 200, 30))


class UnreachableBlobStore(LocalBlobStore):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        raise OSError("connection refused")


def _running_job(sessions) -> tuple[str, int]:
    with sessions() as session:
        job_id = jobs.new_job_id(JobKind.IMAGE_GENERATION)
        jobs.create(session, job_id=job_id, kind=JobKind.IMAGE_GENERATION, model="tiny-qwen-image", owner="o", params={})
        session.commit()
        return job_id, jobs.claim(session, job_id, "w").attempts


def _partial_keys(sessions, job_id: str) -> list[str]:
    with sessions() as session:
        return session.get(Job, job_id).partial_keys


def test_previews_are_stored_and_recorded_in_order_before_close_returns(sessions, tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    job_id, attempt = _running_job(sessions)
    with PreviewPublisher(sessions, blobs, job_id, attempt, fmt="jpeg", quality=80) as publisher:
        publisher(0, IMAGE)
        publisher(1, IMAGE)
    keys = _partial_keys(sessions, job_id)
    assert keys == [f"partials/{job_id}/{attempt}/0.jpeg", f"partials/{job_id}/{attempt}/1.jpeg"]
    for key in keys:
        assert blobs.head(key).content_type == "image/jpeg"
        assert Image.open(io.BytesIO(blobs.get(key))).size == (32, 16)
    # The job then completes as any other.
    with sessions() as session:
        assert jobs.complete(session, job_id, attempt=attempt, output_keys=["o"], output_meta={}, timings={},
                             retention=timedelta(hours=1))


def test_a_preview_that_cannot_be_stored_is_left_out_and_the_next_one_still_is(sessions, tmp_path):
    class FailsOnce(LocalBlobStore):
        calls = 0

        def put(self, key: str, data: bytes, content_type: str) -> None:
            self.calls += 1
            if self.calls == 1:
                raise OSError("connection refused")
            super().put(key, data, content_type)

    job_id, attempt = _running_job(sessions)
    with PreviewPublisher(sessions, FailsOnce(tmp_path / "b"), job_id, attempt, fmt="png", quality=90) as publisher:
        publisher(0, IMAGE)
        publisher(1, IMAGE)
    assert _partial_keys(sessions, job_id) == [f"partials/{job_id}/{attempt}/1.png"]

    job_id, attempt = _running_job(sessions)
    with PreviewPublisher(sessions, UnreachableBlobStore(tmp_path / "c"), job_id, attempt, fmt="png", quality=90) as p:
        p(0, IMAGE)
    assert _partial_keys(sessions, job_id) == []


def test_only_the_attempt_that_owns_the_job_records_previews(sessions, tmp_path):
    blobs = LocalBlobStore(tmp_path / "blobs")
    job_id, attempt = _running_job(sessions)
    with PreviewPublisher(sessions, blobs, job_id, attempt, fmt="png", quality=90) as publisher:
        publisher(0, IMAGE)
    with sessions() as session:
        # Presumed lost and claimed again: the new attempt starts with no previews...
        assert jobs.requeue(session, job_id, attempt=attempt)
        assert jobs.claim(session, job_id, "w2").attempts == attempt + 1
    assert _partial_keys(sessions, job_id) == []
    # ...and the old attempt, still running somewhere, can no longer add any.
    with PreviewPublisher(sessions, blobs, job_id, attempt, fmt="png", quality=90) as publisher:
        publisher(1, IMAGE)
    assert _partial_keys(sessions, job_id) == []
    with sessions() as session:
        assert jobs.cancel(session, job_id)
        assert not jobs.record_partials(session, job_id, attempt=attempt + 1, partial_keys=["k"])

