"""The worker's failure paths around a job, on a real SQLite database and a real local blob store
that is made to fail: the job's state is always written, whatever the store does."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.exc import OperationalError

from darkroom.settings import Settings
from pipelines.spec.types import ImageOutput, VideoOutput
from storage import jobs
from storage.blobs import BlobNotFound, LocalBlobStore
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


def test_a_failing_job_is_failed_even_when_the_blob_store_is_down(tmp_path, sessions, caplog):
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
        # The exception's text is the server's business: in the log, not on the job.
        assert job.error_message.startswith("The model failed while generating.")
        assert "CUDA out of memory" not in job.error_message
    assert "generation_failed: The model failed: RuntimeError: CUDA out of memory" in caplog.text


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


class StillRunner:
    """Stands in for a resident pipeline that finishes: a short grey video or one grey image."""

    def __init__(self, video: bool) -> None:
        self.video = video

    def run(self, request, on_step):
        on_step(1, 1)
        if self.video:
            return VideoOutput(frames=np.full((5, 16, 16, 3), 128, np.uint8), fps=8)
        return ImageOutput(images=[Image.new("RGB", (16, 16), "grey")])


@pytest.mark.parametrize(
    "kind,runner,inputs_kept",
    [
        # A completed image-to-video job keeps its first frame for remixes, as long as the video.
        (JobKind.VIDEO, StillRunner(video=True), True),
        (JobKind.VIDEO, BrokenRunner(), False),  # a failed one cannot be remixed
        (JobKind.IMAGE_EDIT, StillRunner(video=False), False),  # an edit's inputs go when it ends
    ],
)
def test_which_jobs_keep_their_input_images_once_run(tmp_path, sessions, kind, runner, inputs_kept):
    blobs = LocalBlobStore(tmp_path / "blobs")
    ctx = WorkerContext(
        settings=Settings(data_dir=tmp_path, job_watch_interval_s=0.01),
        sessions=sessions,
        blobs=blobs,
        runners={"tiny-wan": runner},
        worker_id="test:1",
    )
    png = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(png, "PNG")
    with sessions() as session:
        job_id = jobs.new_job_id(kind)
        blobs.put(f"inputs/{job_id}/0", png.getvalue(), "image/png")
        params = {"prompt": "a fox", "width": 16, "height": 16, "seed": 1, "num_inference_steps": 1, "num_frames": 5}
        jobs.create(
            session, job_id=job_id, kind=kind, model="tiny-wan", owner="o", params=params, input_keys=[f"inputs/{job_id}/0"]
        )
        session.commit()

    execute(ctx, job_id)

    with sessions() as session:
        assert session.get(Job, job_id).status == (JobStatus.COMPLETED if runner.__class__ is StillRunner else JobStatus.FAILED)
    kept = True
    try:
        blobs.get(f"inputs/{job_id}/0")
    except BlobNotFound:
        kept = False
    assert kept == inputs_kept


class RecordingRunner:
    """Keeps the request it was given and answers with one grey image of the requested size."""

    def __init__(self) -> None:
        self.requests = []

    def run(self, request, on_step):
        self.requests.append(request)
        return ImageOutput(images=[Image.new("RGB", (request.width, request.height), "grey")])


def test_a_masked_edit_reaches_the_runner_with_its_mask_as_sent_and_its_strength(tmp_path, sessions):
    def png(image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()

    blobs = LocalBlobStore(tmp_path / "blobs")
    runner = RecordingRunner()
    ctx = WorkerContext(
        settings=Settings(data_dir=tmp_path, job_watch_interval_s=0.01),
        sessions=sessions,
        blobs=blobs,
        runners={"tiny-qwen-image-edit": runner},
        worker_id="test:1",
    )
    mask = Image.new("RGBA", (32, 16), (0, 0, 0, 255))
    mask.putpixel((3, 4), (0, 0, 0, 0))
    job_id = jobs.new_job_id(JobKind.IMAGE_EDIT)
    keys = [f"inputs/{job_id}/0", f"inputs/{job_id}/1"]
    blobs.put(keys[0], png(Image.new("RGB", (32, 16), "red")), "image/png")
    blobs.put(keys[1], png(mask), "image/png")
    with sessions() as session:
        params = {
            "prompt": "x", "width": 32, "height": 16, "seed": 1, "num_inference_steps": 2,
            "mask_input": 1, "strength": 0.7,
        }
        jobs.create(
            session, job_id=job_id, kind=JobKind.IMAGE_EDIT, model="tiny-qwen-image-edit", owner="o",
            params=params, input_keys=keys,
        )
        session.commit()

    execute(ctx, job_id)

    (request,) = runner.requests
    assert [image.size for image in request.images] == [(32, 16)] and request.images[0].mode == "RGB"
    assert request.mask.mode == "RGBA" and request.mask.getpixel((3, 4)) == (0, 0, 0, 0)
    assert request.strength == 0.7
    with sessions() as session:
        assert session.get(Job, job_id).status == JobStatus.COMPLETED


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


@pytest.mark.parametrize(
    "settings,model,params,code,says",
    [
        # A job accepted by an API that does not compile, run by a worker that does: cache hooks and
        # adapters would recompile the transformer on every job.
        ({"compile_transformer": True}, "tiny-qwen-image", {"cache": {"type": "taylorseer"}}, "cache_unsupported", "compile"),
        ({"compile_transformer": True}, "tiny-qwen-image", {"lora": [{"path_or_id": "a", "scale": 1.0}]},
         "lora_unsupported", "LoRA"),
        # The API does not know the worker shards: a first-block cache would deadlock its ranks.
        ({"devices": "cpu,cpu", "ulysses_degree": 2}, "tiny-wan", {"cache": {"type": "first_block_cache"}},
         "cache_unsupported_sharded", "deadlock"),
    ],
)  # fmt: skip
def test_a_job_this_worker_cannot_run_fails_with_the_reason_before_its_pipeline(
    tmp_path, sessions, settings, model, params, code, says
):
    runner = RecordingRunner()
    ctx = WorkerContext(
        settings=Settings(data_dir=tmp_path, job_watch_interval_s=0.01, **settings),
        sessions=sessions,
        blobs=LocalBlobStore(tmp_path / "blobs"),
        runners={model: runner},
        worker_id="test:1",
    )
    with sessions() as session:
        job_id = jobs.new_job_id(JobKind.IMAGE_GENERATION)
        base = {"prompt": "a fox", "width": 16, "height": 16, "seed": 1, "num_inference_steps": 2}
        jobs.create(session, job_id=job_id, kind=JobKind.IMAGE_GENERATION, model=model, owner="o", params=base | params)
        session.commit()

    execute(ctx, job_id)

    with sessions() as session:
        job = session.get(Job, job_id)
    assert (job.status, job.error_code) == (JobStatus.FAILED, code)
    assert says in job.error_message
    assert runner.requests == []  # the pipeline never ran


def test_the_attempt_that_completes_a_job_deletes_what_superseded_attempts_stored(tmp_path, sessions):
    """Attempt 1 uploaded, then its worker died before completing: attempt 2 completes the job and
    the job keeps one output set."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    ctx = WorkerContext(
        settings=Settings(data_dir=tmp_path, job_watch_interval_s=0.01),
        sessions=sessions,
        blobs=blobs,
        runners={"tiny-qwen-image": RecordingRunner()},
        worker_id="test:2",
    )
    with sessions() as session:
        job_id = jobs.new_job_id(JobKind.IMAGE_GENERATION)
        params = {"prompt": "a fox", "width": 16, "height": 16, "seed": 1, "num_inference_steps": 2}
        jobs.create(session, job_id=job_id, kind=JobKind.IMAGE_GENERATION, model="tiny-qwen-image", owner="o", params=params)
        session.commit()
        assert jobs.claim(session, job_id, "test:1").attempts == 1
        assert jobs.requeue(session, job_id, attempt=1)  # what the sweeper does when test:1 goes silent
    blobs.put(f"outputs/{job_id}/1/0.png", b"first", "image/png")
    blobs.put(f"partials/{job_id}/1/0.png", b"first", "image/png")

    execute(ctx, job_id)

    with sessions() as session:
        job = session.get(Job, job_id)
    assert (job.status, job.attempts) == (JobStatus.COMPLETED, 2)
    assert [path.name for path in (blobs.root / "outputs" / job_id).iterdir()] == ["2"]
    assert not (blobs.root / "partials" / job_id / "1").exists()
