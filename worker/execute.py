"""Running one job, start to end: claim it, load its inputs, run the resident pipeline, encode and
upload the outputs, and only then mark it completed. Every stage is timed onto the job; a
`JobMonitor` thread watches the attempt meanwhile (cancel, heartbeat, time limit)."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import TypeVar

from PIL import Image
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from darkroom.logs import log_context
from darkroom.settings import Settings
from pipelines.spec.checks import ParamRefused, check_params
from pipelines.spec.lora_names import LoraError
from pipelines.spec.params import JobParams
from pipelines.spec.registry import get_model
from pipelines.spec.types import GenerationRequest, ImageOutput, VideoOutput
from storage import jobs
from storage.blobs import BlobStore
from storage.models import Job, JobKind
from worker.monitor import DENOISE_SHARE, TIME_LIMIT_CODE, JobMonitor, JobStopped, StopReason
from worker.presence import WorkerStats
from worker.previews import PreviewPublisher
from worker.retention import attempt_prefixes, delete_blobs

T = TypeVar("T")

log = logging.getLogger("darkroom.worker")

_IMAGE_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


class JobFailure(Exception):
    """A job's failure: its code, and what went wrong, which may be an exception's own text (for
    the log; `tenant_message` is what the job records)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# What a tenant reads when a job fails for a reason of the server's own. The exception behind it
# can name paths, hosts, library internals or other jobs' data, so it goes to the log only.
_SERVER_FAULTS = {
    "generation_failed": "The model failed while generating.",
    "params_unreadable": "This worker cannot read the job's parameters.",
    "input_unreadable": "An input image stored for this job could not be read.",
    "encode_failed": "Encoding the output failed.",
    "output_upload_failed": "Storing the output failed.",
}


def tenant_message(failure: JobFailure) -> str:
    """The message a failed job records: a fixed text per code for the server's faults (the
    details are in the worker's log, under the job's id), else the failure's own, which is
    written for the tenant (a parameter this worker refuses, an adapter that does not fit)."""
    if failure.code in _SERVER_FAULTS:
        return f"{_SERVER_FAULTS[failure.code]} The server's log has the details, under this job's id."
    return failure.message


@dataclass
class WorkerContext:
    """What one worker process holds for its whole life: built once, after the fork."""

    settings: Settings
    sessions: sessionmaker[Session]
    blobs: BlobStore
    runners: dict  # model name -> pipelines.runners runner, resident
    worker_id: str  # host:pid of the process that runs the pipelines
    stats: WorkerStats = field(default_factory=WorkerStats)  # what its heartbeat publishes


@contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - started, 4)


def execute(ctx: WorkerContext, job_id: str) -> None:
    with log_context(job_id=job_id):  # every line logged while it runs, libraries' included
        _execute(ctx, job_id)


def _execute(ctx: WorkerContext, job_id: str) -> None:
    with ctx.sessions() as session:
        # Retried through a database restart: giving up would ack the message, and the job would
        # wait for the sweeper's republish instead of running now.
        job = _retry_database(
            lambda: jobs.claim(session, job_id, ctx.worker_id),
            session,
            window_s=ctx.settings.worker_lost_after_s,
        )
        if job is None:
            # Already ran, cancelled, or running elsewhere: a redelivered message is harmless.
            log.info("job %s is not queued (%s); skipping", job_id, jobs.status_of(session, job_id))
            return
        ctx.stats.job_started(job_id)
        started = time.monotonic()
        timings = {"queue_wait": round((job.started_at - job.created_at).total_seconds(), 4)}
        ended, error = _attempt(ctx, session, job, timings)
    if ended is Ended.LEFT:
        ctx.stats.job_left()
        return
    ctx.stats.job_finished(job.model, timings=timings, run_s=time.monotonic() - started, error=error)
    if job.attempts > 1:
        # An earlier run presumed lost may have stored outputs before it died; the sweeper removes
        # them when it requeues the job, and this makes sure (it may have died in between).
        superseded = (attempt_prefixes(job_id, earlier) for earlier in range(1, job.attempts))
        delete_blobs(ctx.blobs, *(prefix for prefixes in superseded for prefix in prefixes))
    if job.input_keys and not ctx.settings.keep_inputs and not _inputs_outlive_the_run(job, ended):
        delete_blobs(ctx.blobs, f"inputs/{job_id}")


def _inputs_outlive_the_run(job: Job, ended: Ended) -> bool:
    """A completed video keeps its input image (image-to-video's first frame) as long as its
    outputs: a remix reruns it from the same image. Result retention deletes both together
    (worker/retention.py), and deleting the video deletes both at once."""
    return ended is Ended.COMPLETED and job.kind == JobKind.VIDEO


class Ended(Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    LEFT = "left"  # cancelled or taken over: not this run's to finish


def _attempt(ctx: WorkerContext, session: Session, job: Job, timings: dict[str, float]) -> tuple[Ended, str | None]:
    """Run one claimed attempt to its end and write that end: how it ended, and the error."""
    job_id, attempt = job.id, job.attempts
    # A completed job's previews stay until its retention ends (a stream may still be reading
    # them); an attempt that did not complete removes its own with its outputs.
    outputs_prefix, previews_prefix = attempt_prefixes(job_id, attempt)
    with JobMonitor(ctx.settings, ctx.sessions, job_id, attempt) as monitor:
        try:
            output_keys, output_meta = _run(ctx, job, monitor, outputs_prefix, timings)
            completed = _retry_database(
                lambda: jobs.complete(
                    session,
                    job_id,
                    attempt=attempt,
                    output_keys=output_keys,
                    output_meta=output_meta,
                    timings=timings,
                    retention=timedelta(seconds=ctx.settings.result_retention_s),
                ),
                session,
                window_s=ctx.settings.worker_lost_after_s,
            )
        except JobStopped as stopped:
            if stopped.reason != StopReason.TIME_LIMIT:
                log.info("job %s was cancelled or taken over while running", job_id)
                delete_blobs(ctx.blobs, outputs_prefix, previews_prefix)
                return Ended.LEFT, None
            limit = ctx.settings.job_time_limit_s
            message = f"The job ran longer than its {limit:g} s time limit."
            log.warning("job %s passed its %g s time limit", job_id, limit)
            jobs.fail(session, job_id, code=TIME_LIMIT_CODE, message=message, attempt=attempt, timings=timings)
            delete_blobs(ctx.blobs, outputs_prefix, previews_prefix)
            return Ended.FAILED, f"{TIME_LIMIT_CODE}: {message}"
        except JobFailure as failure:
            log.warning("job %s failed: %s: %s", job_id, failure.code, failure.message)
            message = tenant_message(failure)
            jobs.fail(session, job_id, code=failure.code, message=message, attempt=attempt, timings=timings)
            delete_blobs(ctx.blobs, outputs_prefix, previews_prefix)
            return Ended.FAILED, f"{failure.code}: {message}"
    if not completed:
        log.info("job %s was cancelled during upload; removing its outputs", job_id)
        delete_blobs(ctx.blobs, outputs_prefix, previews_prefix)
        return Ended.LEFT, None
    log.info("job %s completed: %s", job_id, timings)
    return Ended.COMPLETED, None


def _retry_database(write: Callable[[], T], session: Session, *, window_s: float) -> T:
    """A claim or a finishing write, retried while the database is away (a restart): for the
    finishing write the outputs are stored, so giving up would waste the GPU time. Past the window
    the sweeper may already have presumed this worker lost, so the error is let through."""
    deadline = time.monotonic() + window_s
    while True:
        try:
            return write()
        except OperationalError as error:
            session.rollback()
            if time.monotonic() > deadline:
                raise
            log.warning("database unavailable (%s); retrying", error)
            time.sleep(0.5)


def _run(ctx: WorkerContext, job: Job, monitor: JobMonitor, outputs_prefix: str, timings: dict[str, float]):
    runner = ctx.runners.get(job.model)
    if runner is None:
        raise JobFailure("model_not_loaded", f"This worker does not serve the model '{job.model}'.")
    params = _params(ctx, job)
    with _stage(timings, "load_inputs"):
        request = _build_request(ctx, job, params)
    with _stage(timings, "pipeline"):
        try:
            output = _run_pipeline(ctx, runner, job, params, request, monitor)
        except (JobStopped, JobFailure):  # a sharded runner's own failure (worker/rank_group.py)
            raise
        except LoraError as error:  # the adapter's fault, not the model's; the pipeline is clean
            raise JobFailure(error.code, str(error)) from error
        except Exception as error:
            log.exception("pipeline error on job %s", job.id)
            raise JobFailure("generation_failed", f"The model failed: {type(error).__name__}: {error}") from error
    # The model's own stages: prompt and input encoding, denoising, VAE decode.
    timings.update({f"model.{name}": round(value, 4) for name, value in output.timings.items() if name != "pipeline"})
    monitor.set_progress(DENOISE_SHARE)
    with _stage(timings, "encode_output"):
        blobs_out, output_meta = _encode(params, output, outputs_prefix)
    with _stage(timings, "upload"):
        for key, (data, content_type) in blobs_out.items():
            _upload(ctx, monitor, key, data, content_type)
    return list(blobs_out), output_meta


def _params(ctx: WorkerContext, job: Job) -> JobParams:
    """The job's parameters, if this worker can run them: a job accepted under other settings
    (an API that does not compile, say) fails with the reason rather than run something else."""
    try:
        params = JobParams.from_stored(job.params)
    except ValidationError as error:
        raise JobFailure("params_unreadable", f"The job's parameters cannot be read: {error}") from error
    try:
        check_params(get_model(job.model), params, ctx.settings.deployment)
    except ParamRefused as refused:
        raise JobFailure(refused.job_code, refused.message) from refused
    return params


def _run_pipeline(
    ctx: WorkerContext, runner, job: Job, params: JobParams, request: GenerationRequest, monitor: JobMonitor
):
    """The runner's call; with previews stored as they come when the request asked for them.
    Leaving waits for the last preview to be recorded, so every one precedes the completion."""
    if not request.partial_images:
        return runner.run(request, on_step=monitor.on_step)
    publisher = PreviewPublisher(
        ctx.sessions, ctx.blobs, job.id, job.attempts, fmt=params.output_format, quality=params.image_quality
    )
    with publisher as previews:
        return runner.run(request, on_step=monitor.on_step, on_preview=previews)


def _upload(ctx: WorkerContext, monitor: JobMonitor, key: str, data: bytes, content_type: str) -> None:
    """Store one output, retrying with backoff for `upload_retry_window_s` (the store may be
    restarting); the job fails with the last error after that."""
    deadline = time.monotonic() + ctx.settings.upload_retry_window_s
    delay = 0.25
    while True:
        try:
            ctx.blobs.put(key, data, content_type)
            return
        except Exception as error:
            if time.monotonic() + delay > deadline:
                window = ctx.settings.upload_retry_window_s
                raise JobFailure(
                    "output_upload_failed", f"Storing the output failed for {window:g} s; last error: {error}"
                ) from error
            log.warning("upload of %s failed (%s); retrying in %.2f s", key, error, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            monitor.raise_if_stopped()


def _build_request(ctx: WorkerContext, job: Job, params: JobParams) -> GenerationRequest:
    images, mask = [], None
    try:
        for index, key in enumerate(job.input_keys):
            image = Image.open(io.BytesIO(ctx.blobs.get(key)))
            if index == params.mask_input:  # an edit's mask is stored among its inputs
                image.load()
                mask = image  # as sent: its alpha is the mask (pipelines/masks.py)
            else:
                images.append(image.convert("RGB"))
    except Exception as error:
        raise JobFailure("input_unreadable", f"An input image could not be read: {error}") from error
    return GenerationRequest(
        prompt=params.prompt,
        width=params.width,
        height=params.height,
        seed=params.seed,
        num_inference_steps=params.num_inference_steps,
        negative_prompt=params.negative_prompt,
        guidance_scale=params.guidance_scale,
        true_cfg_scale=params.true_cfg_scale,
        num_images=params.num_images,
        num_frames=params.num_frames,
        images=tuple(images),
        mask=mask,
        strength=params.strength,
        cache=params.cache,
        partial_images=params.partial_images,
        lora=params.lora,
    )


def _encode(params: JobParams, output: ImageOutput | VideoOutput, prefix: str):
    from worker.media import encode_image

    try:
        if isinstance(output, VideoOutput):
            return _encode_video(output, prefix)
        fmt = params.output_format
        blobs_out = {
            f"{prefix}/{index}.{fmt}": (encode_image(image, fmt, quality=params.image_quality), _IMAGE_CONTENT_TYPES[fmt])
            for index, image in enumerate(output.images)
        }
        return blobs_out, {"images": len(output.images), "format": fmt}
    except Exception as error:
        raise JobFailure("encode_failed", f"Encoding the output failed: {error}") from error


def _encode_video(output: VideoOutput, prefix: str):
    """The MP4 first (the default variant), then its thumbnail and spritesheet. Each still's key
    and layout go into the meta, where `/content?variant=` finds them: a video made before the
    stills existed has none there, and says so rather than guessing a key."""
    from worker.media import encode_mp4, encode_spritesheet, encode_thumbnail

    frames = output.frames
    height, width = frames.shape[1:3]
    blobs_out = {f"{prefix}/video.mp4": (encode_mp4(frames, output.fps), "video/mp4")}
    meta = {"fps": output.fps, "frames": int(frames.shape[0]), "width": int(width), "height": int(height)}
    for variant, still in (("thumbnail", encode_thumbnail(frames)), ("spritesheet", encode_spritesheet(frames))):
        key = f"{prefix}/{variant}.{still.extension}"
        blobs_out[key] = (still.data, still.content_type)
        meta[variant] = {"key": key, **still.layout}
    return blobs_out, meta
