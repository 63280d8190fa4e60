"""Running one job, start to end: claim it, load its inputs, run the resident pipeline, encode and
upload the outputs, and only then mark it completed. Every stage is timed onto the job."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from darkroom.settings import Settings
from pipelines.types import GenerationRequest, ImageOutput, VideoOutput
from storage import jobs
from storage.blobs import BlobStore
from storage.models import Job

log = logging.getLogger("darkroom.worker")

_IMAGE_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_DENOISE_SHARE = 95  # progress reaches this at the last step; encoding and upload make the rest


class JobCancelled(Exception):
    """The job left in_progress under us (deleted); stop and publish nothing."""


class JobFailure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class WorkerContext:
    """What one worker process holds for its whole life: built once, after the fork."""

    settings: Settings
    sessions: sessionmaker[Session]
    blobs: BlobStore
    runners: dict  # model name -> pipelines.runners runner, resident
    hostname: str


@contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - started, 4)


class ProgressWriter:
    """The step callback: writes progress at most every `interval_s`, and learns of a cancel from
    the same conditional UPDATE (it matches no row once the job is no longer in_progress)."""

    def __init__(self, session: Session, job_id: str, interval_s: float) -> None:
        self.session = session
        self.job_id = job_id
        self.interval_s = interval_s
        self.last_write = time.monotonic()

    def __call__(self, step: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last_write < self.interval_s and step < total:
            return
        self.last_write = now
        if not jobs.record_progress(self.session, self.job_id, _DENOISE_SHARE * step // total):
            raise JobCancelled(self.job_id)


def execute(ctx: WorkerContext, job_id: str) -> None:
    with ctx.sessions() as session:
        job = jobs.claim(session, job_id, ctx.hostname)
        if job is None:
            # Already ran, or was cancelled: a redelivered message is harmless.
            log.info("job %s is not queued (%s); skipping", job_id, jobs.status_of(session, job_id))
            return
        timings = {"queue_wait": round((job.started_at - job.created_at).total_seconds(), 4)}
        try:
            output_keys, output_meta = _run(ctx, session, job, timings)
        except JobCancelled:
            log.info("job %s was cancelled while running", job_id)
            ctx.blobs.delete_prefix(f"outputs/{job_id}")
            return
        except JobFailure as failure:
            log.warning("job %s failed: %s: %s", job_id, failure.code, failure.message)
            ctx.blobs.delete_prefix(f"outputs/{job_id}")
            jobs.fail(session, job_id, code=failure.code, message=failure.message, timings=timings)
            return
        retention = timedelta(seconds=ctx.settings.result_retention_s)
        if not jobs.complete(
            session, job_id, output_keys=output_keys, output_meta=output_meta, timings=timings, retention=retention
        ):
            log.info("job %s was cancelled during upload; removing its outputs", job_id)
            ctx.blobs.delete_prefix(f"outputs/{job_id}")
            return
        log.info("job %s completed: %s", job_id, timings)


def _run(ctx: WorkerContext, session: Session, job: Job, timings: dict[str, float]):
    runner = ctx.runners.get(job.model)
    if runner is None:
        raise JobFailure("model_not_loaded", f"This worker does not serve the model '{job.model}'.")
    with _stage(timings, "load_inputs"):
        request = _build_request(ctx, job)
    progress = ProgressWriter(session, job.id, ctx.settings.progress_interval_s)
    with _stage(timings, "pipeline"):
        try:
            output = runner.run(request, on_step=progress)
        except JobCancelled:
            raise
        except Exception as error:
            log.exception("pipeline error on job %s", job.id)
            raise JobFailure("generation_failed", f"The model failed: {type(error).__name__}: {error}") from error
    # The model's own stages: prompt and input encoding, denoising, VAE decode.
    timings.update({f"model.{name}": round(value, 4) for name, value in output.timings.items() if name != "pipeline"})
    with _stage(timings, "encode_output"):
        blobs_out, output_meta = _encode(job, output)
    with _stage(timings, "upload"):
        try:
            for key, (data, content_type) in blobs_out.items():
                ctx.blobs.put(key, data, content_type)
        except Exception as error:
            raise JobFailure("output_upload_failed", f"Storing the output failed: {error}") from error
    return list(blobs_out), output_meta


def _build_request(ctx: WorkerContext, job: Job) -> GenerationRequest:
    params = job.params
    try:
        images = tuple(Image.open(io.BytesIO(ctx.blobs.get(key))).convert("RGB") for key in job.input_keys)
    except Exception as error:
        raise JobFailure("input_unreadable", f"An input image could not be read: {error}") from error
    return GenerationRequest(
        prompt=params["prompt"],
        width=params["width"],
        height=params["height"],
        seed=params["seed"],
        num_inference_steps=params["num_inference_steps"],
        negative_prompt=params.get("negative_prompt"),
        guidance_scale=params.get("guidance_scale"),
        true_cfg_scale=params.get("true_cfg_scale"),
        num_images=params.get("num_images", 1),
        num_frames=params.get("num_frames"),
        images=images,
    )


def _encode(job: Job, output: ImageOutput | VideoOutput):
    from pipelines.media import encode_image, encode_mp4

    try:
        if isinstance(output, VideoOutput):
            data = encode_mp4(output.frames, output.fps)
            height, width = output.frames.shape[1:3]
            meta = {"fps": output.fps, "frames": int(output.frames.shape[0]), "width": int(width), "height": int(height)}
            return {f"outputs/{job.id}/video.mp4": (data, "video/mp4")}, meta
        fmt = job.params.get("output_format", "png")
        compression = job.params.get("output_compression")
        quality = 90 if compression is None else compression
        blobs_out = {
            f"outputs/{job.id}/{index}.{fmt}": (encode_image(image, fmt, quality=quality), _IMAGE_CONTENT_TYPES[fmt])
            for index, image in enumerate(output.images)
        }
        return blobs_out, {"images": len(output.images), "format": fmt}
    except Exception as error:
        raise JobFailure("encode_failed", f"Encoding the output failed: {error}") from error
