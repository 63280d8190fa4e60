"""The worker's failure paths around a job, on a real SQLite database and a real local blob store
that is made to fail: the job's state is always written, whatever the store does."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy.exc import OperationalError

from darkroom.settings import Settings
from pipelines.types import ImageOutput
from storage import jobs
from storage.blobs import LocalBlobStore
from storage.models import Job, JobKind, JobStatus
from worker.execute import WorkerContext, _retry_database, execute


class UnreachableBlobStore(LocalBlobStore):
    """A blob store whose server went away: every write and delete fails."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        raise OSError("connection refused")

    def delete_prefix(self, prefix: str) -> None:
        raise OSError("connection refused")


class BrokenRunner:
    """Stands in for a resident pipeline that raises mid-run (what a GPU out of memory does)."""

    def run(self, request, on_step):
        on_step(0, 2)
        raise RuntimeError("CUDA out of memory")


def test_a_failing_job_is_failed_even_when_the_blob_store_is_down(tmp_path, sessions):
    settings = Settings(data_dir=tmp_path, job_watch_interval_s=0.01)
    ctx = WorkerContext(
        settings=settings,
        sessions=sessions,
        blobs=UnreachableBlobStore(tmp_path / "blobs"),
        runners={"tiny-wan": BrokenRunner()},
        worker_id="test:1",
    )
    with sessions() as session:
        job_id = jobs.new_job_id(JobKind.VIDEO)
        params = {"prompt": "a fox", "width": 32, "height": 32, "seed": 1, "num_inference_steps": 2, "num_frames": 5}
        jobs.create(session, job_id=job_id, kind=JobKind.VIDEO, model="tiny-wan", owner="o", params=params)
        session.commit()

    execute(ctx, job_id)

    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.FAILED
        assert job.error_code == "generation_failed"
        assert "CUDA out of memory" in job.error_message


def test_a_database_write_is_retried_through_an_outage_then_given_up(sessions):
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE jobs", {}, Exception("server closed the connection"))
        return "written"

    with sessions() as session:
        assert _retry_database(flaky, session, window_s=10) == "written"
        assert len(calls) == 3

        def down() -> str:
            raise OperationalError("UPDATE jobs", {}, Exception("connection refused"))

        with pytest.raises(OperationalError):
            _retry_database(down, session, window_s=0)


class PreviewingRunner:
    """Stands in for an image pipeline that hands over two previews, then ends or fails."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def run(self, request, on_step, on_preview):
        for index in range(request.partial_images):
            on_step(index + 1, 4)
            on_preview(index, Image.new("RGB", (request.width, request.height), (index * 90, 0, 0)))
        if self.fail:
            raise RuntimeError("CUDA out of memory")
        return ImageOutput(images=[Image.new("RGB", (request.width, request.height))])


@pytest.mark.parametrize("fail", [False, True])
def test_a_streamed_jobs_previews_are_recorded_before_it_ends_and_removed_if_it_fails(tmp_path, sessions, fail):
    blobs = LocalBlobStore(tmp_path / "blobs")
    settings = Settings(data_dir=tmp_path, job_watch_interval_s=0.01)
    ctx = WorkerContext(settings=settings, sessions=sessions, blobs=blobs,
                        runners={"tiny-qwen-image": PreviewingRunner(fail)}, worker_id="test:1")
    with sessions() as session:
        job_id = jobs.new_job_id(JobKind.IMAGE_GENERATION)
        params = {"prompt": "a fox", "width": 32, "height": 16, "seed": 1, "num_inference_steps": 4,
                  "output_format": "webp", "partial_images": 2}
        jobs.create(session, job_id=job_id, kind=JobKind.IMAGE_GENERATION, model="tiny-qwen-image", owner="o",
                    params=params)
        session.commit()

    execute(ctx, job_id)

    with sessions() as session:
        job = session.get(Job, job_id)
    assert job.partial_keys == [f"partials/{job_id}/1/0.webp", f"partials/{job_id}/1/1.webp"]
    if fail:
        assert job.status == JobStatus.FAILED
        assert not (blobs.root / "partials" / job_id / "1").exists()  # an attempt that failed removes its own
    else:
        assert job.status == JobStatus.COMPLETED
        assert [Image.open(io.BytesIO(blobs.get(key))).format for key in job.partial_keys] == ["WEBP", "WEBP"]
