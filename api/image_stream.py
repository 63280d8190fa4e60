"""`stream=true` on `/v1/images/generations` and `/v1/images/edits`: server-sent events.

The job is submitted exactly as a synchronous one (its row is the truth); the response then follows
the row, as the synchronous answer does, and sends each preview the worker records on it
(`partial_keys`, stored by worker/previews.py) as `<kind>.partial_image`, then the image as
`<kind>.completed`, in the shapes the openai SDK parses (it reads `data:` and discriminates on
`type`). A job that fails, is cancelled or outlasts the wait bound ends the stream with an `error`
event whose data carries an `error` object: the SDK raises it as `openai.APIError` with its
message, code and type. Nothing else ends a stream early: a store or database that goes away
mid-stream is reported the same way, naming the job to follow with `GET /v1/images/{id}`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from api.deps import Services
from api.errors import bad_request
from api.schemas import ImageRequestBase
from pipelines.spec.registry import ModelSpec
from storage import jobs
from storage.models import Job, JobKind, JobStatus

log = logging.getLogger("darkroom.api")

_FIRST_POLL_S, _MAX_POLL_S = 0.01, 0.25
_KEEP_ALIVE_S = 10.0  # a comment line after this long without an event, for proxies and the read timeout
_EVENT_PREFIX = {JobKind.IMAGE_GENERATION: "image_generation", JobKind.IMAGE_EDIT: "image_edit"}
_EVENT_QUALITIES = frozenset({"low", "medium", "high", "auto"})


def check_stream_params(spec: ModelSpec, body: ImageRequestBase) -> None:
    """What streaming allows, checked before anything is stored."""
    if not body.stream:
        if body.partial_images:
            raise bad_request(
                "partial_images is only used with stream=true; send stream=true, or leave it out.",
                param="partial_images",
                code="unsupported_parameter",
            )
        return
    if body.n != 1:
        raise bad_request(
            f"A streamed response carries one image; n must be 1 with stream=true (got {body.n}).",
            param="n",
            code="unsupported_parameter",
        )
    if body.response_format == "url":
        raise bad_request(
            "Streamed images are sent as b64_json; response_format 'url' cannot be streamed.",
            param="response_format",
            code="unsupported_parameter",
        )
    if body.partial_images and not spec.traits.previews:
        raise bad_request(
            f"The model '{spec.name}' cannot make partial images; send partial_images 0.",
            param="partial_images",
            code="unsupported_parameter",
        )


def stream_image_job(services: Services, job: Job, body: ImageRequestBase) -> StreamingResponse:
    events = _events(services, job.id, _EventFields.of(job, body))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


@dataclass(frozen=True)
class _EventFields:
    prefix: str
    size: str
    output_format: str
    quality: str
    safety_identifier: str | None

    @classmethod
    def of(cls, job: Job, body: ImageRequestBase) -> _EventFields:
        params = job.params
        return cls(
            prefix=_EVENT_PREFIX[JobKind(job.kind)],
            size=f"{params['width']}x{params['height']}",
            output_format=params["output_format"],
            # The SDK's event enums; the legacy `standard` / `hd` read as `auto`.
            quality=body.quality if body.quality in _EVENT_QUALITIES else "auto",
            safety_identifier=body.safety_identifier or body.user or None,
        )

    def common(self, data: bytes) -> dict:
        return {
            "b64_json": base64.b64encode(data).decode(),
            "background": "opaque",  # these models always paint every pixel
            "created_at": int(time.time()),
            "output_format": self.output_format,
            "quality": self.quality,
            "size": self.size,
        }


def _sse(event: str, data: dict) -> str:
    """One event; its `type` is also the SSE event name (the SDK reads only `data:`)."""
    data = {"type": event} | data
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _error(message: str, code: str | None, error_type: str = "server_error") -> str:
    error = {"message": message, "type": error_type, "param": None, "code": code}
    return _sse("error", {"error": error})


def _look(services: Services, job_id: str):
    # A short session per look, so a waiting stream holds no pooled connection between looks.
    with services.sessions() as session:
        return session.execute(
            select(Job.status, Job.partial_keys, Job.output_keys, Job.error_code, Job.error_message).where(
                Job.id == job_id
            )
        ).one()


async def _events(services: Services, job_id: str, fields: _EventFields) -> AsyncIterator[str]:
    wait_s = services.settings.image_wait_timeout_s
    deadline = time.monotonic() + wait_s
    delay, last_sent = _FIRST_POLL_S, time.monotonic()
    # The row's previews looked at so far. A requeued job's next attempt starts its list over and
    # makes the same previews again (same seed, same steps): only those beyond are sent.
    seen = 0
    sent = 0  # partial images sent: the next one's index
    try:
        while True:
            state = await run_in_threadpool(_look, services, job_id)
            failed = state.status in jobs.TERMINAL and state.status != JobStatus.COMPLETED
            keys = [] if failed else state.partial_keys or []  # a failed attempt removed its own
            for key in keys[seen:]:
                seen += 1
                data = await run_in_threadpool(_blob_or_none, services, key)
                if data is not None:
                    yield _sse(f"{fields.prefix}.partial_image", fields.common(data) | {"partial_image_index": sent})
                    sent += 1
                    last_sent = time.monotonic()
            if state.status == JobStatus.COMPLETED:
                data = await run_in_threadpool(services.blobs.get, state.output_keys[0])
                yield _sse(f"{fields.prefix}.completed", _completed(fields, data))
                return
            if failed:
                message = f"Image job {job_id} {state.status}: {state.error_message or 'no reason recorded'}"
                yield _error(message, state.error_code or str(state.status))
                return
            if time.monotonic() >= deadline:
                yield _error(
                    f"Image job {job_id} is still {state.status} after {wait_s:g} s; "
                    f"follow it with GET /v1/images/{job_id}.",
                    "image_job_timeout",
                )
                return
            if time.monotonic() - last_sent >= _KEEP_ALIVE_S:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, _MAX_POLL_S)
    except Exception as error:  # noqa: BLE001 - the database or the store went away mid-stream
        log.warning("stream of image job %s interrupted: %s", job_id, error)
        yield _error(
            f"The stream of image job {job_id} was interrupted ({type(error).__name__}); the job is "
            f"kept: follow it with GET /v1/images/{job_id}.",
            "stream_interrupted",
        )


def _blob_or_none(services: Services, key: str) -> bytes | None:
    """A preview's bytes; None if it is gone (its attempt failed and removed it): one preview
    fewer, never the end of the stream."""
    try:
        return services.blobs.get(key)
    except Exception as error:  # noqa: BLE001 - S3 and filesystem errors share no base class
        log.warning("preview %s could not be read: %s", key, error)
        return None


def _completed(fields: _EventFields, data: bytes) -> dict:
    # OpenAI counts tokens; these models have none to count, so usage is all zeros (the SDK
    # requires the object on the completed event).
    usage = {
        "input_tokens": 0,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
        "output_tokens": 0,
        "total_tokens": 0,
    }
    event = fields.common(data) | {"usage": usage}
    if fields.safety_identifier:
        event["safety_identifier"] = fields.safety_identifier
    return event
