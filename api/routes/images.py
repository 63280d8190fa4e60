"""`/v1/images`: generations and edits. Synchronous as OpenAI's are: the request enqueues the job,
waits for the worker up to a bound, and answers with the images; past the bound it answers with an
error naming the job id, which `GET /v1/images/{id}` then follows. With `stream=true` the answer
is a stream of server-sent events instead (api/image_stream.py)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from api.bodies import Upload, read_body
from api.content import ensure_servable, stream_blob
from api.deps import OwnerDep, Services, ServicesDep, SessionDep, get_owned_job, idempotency_key
from api.edit_inputs import edit_refs
from api.errors import APIError, bad_request
from api.image_stream import stream_image_job
from api.input_reference import read_reference
from api.masks import check_mask
from api.schemas import ErrorObject, ImageData, ImageEditRequest, ImageGenerateRequest, ImageJob, ImagesResponse
from api.submission.model_choice import parse_size, resolve_model
from api.submission.params import check_inputs, image_params
from api.submission.submit import submit
from pipelines.spec.lora_names import LORA_ERROR_CODES
from pipelines.spec.params import JobParams
from pipelines.spec.registry import Family
from storage import jobs
from storage.models import Job, JobKind, JobStatus

router = APIRouter(prefix="/v1/images", tags=["images"])
IMAGE_KINDS = (JobKind.IMAGE_GENERATION, JobKind.IMAGE_EDIT)
_FIRST_POLL_S, _MAX_POLL_S = 0.01, 0.25


@router.post("/generations", response_model=ImagesResponse, response_model_exclude_none=True)
async def create_image(request: Request, services: ServicesDep, session: SessionDep, owner: OwnerDep):
    body, _ = await read_body(request, ImageGenerateRequest, file_fields=(), settings=services.settings)
    spec = resolve_model(services, body.model, Family.TEXT_TO_IMAGE)
    params = image_params(services.settings, spec, body, parse_size(spec, body.size, rounded=True))
    job = await run_in_threadpool(
        submit,
        services,
        session,
        kind=JobKind.IMAGE_GENERATION,
        spec=spec,
        owner=owner,
        body=body,
        params=params,
        idempotency_key=idempotency_key(request),
    )
    if body.stream:
        return stream_image_job(services, job, body)
    return await _answer_when_done(request, services, session, job, body)


@router.post("/edits", response_model=ImagesResponse, response_model_exclude_none=True)
async def edit_image(request: Request, services: ServicesDep, session: SessionDep, owner: OwnerDep):
    """Multipart (the SDK's form, file parts) or JSON (`images` and `mask` as references): both
    become the same references, then the same uploads (api/edit_inputs.py)."""
    settings = services.settings
    body, parts = await read_body(request, ImageEditRequest, file_fields=("image", "mask"), settings=settings)
    spec = resolve_model(services, body.model, Family.IMAGE_EDIT)
    json_body = request.headers.get("content-type", "").startswith("application/json")
    refs = edit_refs(body, parts, spec, settings, json_body=json_body)
    uploads: list[Upload] = [await read_reference(ref, services, owner) for ref in refs.images]
    check_inputs(spec, uploads)
    # Without a size, the output follows the first image's aspect ratio (SizeRule.fit).
    size = (
        parse_size(spec, body.size, rounded=True)
        if body.size not in (None, "auto")
        else spec.size.fit(uploads[0].width, uploads[0].height)
    )
    # The mask is stored as the last input.
    params = image_params(settings, spec, body, size, mask_input=len(uploads) if refs.mask else None)
    if refs.mask is not None:
        mask = await read_reference(refs.mask, services, owner)
        # Reading every pixel's alpha of a large mask takes a while: off the event loop.
        uploads.append(await run_in_threadpool(check_mask, mask, image=uploads[0]))
    job = await run_in_threadpool(
        submit,
        services,
        session,
        kind=JobKind.IMAGE_EDIT,
        spec=spec,
        owner=owner,
        body=body,
        params=params,
        uploads=uploads,
        idempotency_key=idempotency_key(request),
    )
    if body.stream:
        return stream_image_job(services, job, body)
    return await _answer_when_done(request, services, session, job, body)


def _current_status(services: Services, job_id: str):
    # A short session per look, so a waiting request holds no pooled connection between looks.
    with services.sessions() as session:
        return jobs.status_of(session, job_id)


async def _answer_when_done(request: Request, services: Services, session, job: Job, body) -> ImagesResponse:
    deadline = time.monotonic() + services.settings.image_wait_timeout_s
    delay = _FIRST_POLL_S
    while (status := await run_in_threadpool(_current_status, services, job.id)) not in jobs.TERMINAL:
        if time.monotonic() >= deadline:
            raise APIError(
                504,
                f"Image job {job.id} is still {status} after {services.settings.image_wait_timeout_s:g} s; "
                f"follow it with GET /v1/images/{job.id}.",
                code="image_job_timeout",
                type="server_error",
                # A retry would start a second job; the client should follow this one instead.
                headers={"x-should-retry": "false"},
            )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, _MAX_POLL_S)
    session.expire_all()
    job = await run_in_threadpool(session.get, Job, job.id)
    if job.status != JobStatus.COMPLETED:
        # A missing or unfitting LoRA adapter is the request's fault, found only on the worker.
        request_fault = job.error_code in LORA_ERROR_CODES
        raise APIError(
            400 if request_fault else 500,
            f"Image job {job.id} {job.status}: {job.error_message}",
            param="lora" if request_fault else None,
            code=job.error_code,
            type="invalid_request_error" if request_fault else "server_error",
            headers={"x-should-retry": "false"},
        )
    if body.response_format == "url":
        base = str(request.base_url).rstrip("/")
        data = [ImageData(url=f"{base}/v1/images/{job.id}/content?index={i}") for i in range(len(job.output_keys))]
    else:
        blobs = await run_in_threadpool(lambda: [services.blobs.get(key) for key in job.output_keys])
        data = [ImageData(b64_json=base64.b64encode(blob).decode()) for blob in blobs]
    params = JobParams.from_stored(job.params)
    return ImagesResponse(
        created=int(job.created_at.timestamp()),
        data=data,
        output_format=params.output_format,
        size=params.size,
        background="opaque",  # these models always paint every pixel
    )


def _get_image_job(session, image_id: str, owner: str) -> Job:
    return get_owned_job(session, image_id, owner, IMAGE_KINDS, "image")


@router.get("/{image_id}", response_model=ImageJob)
def retrieve_image_job(image_id: str, session: SessionDep, owner: OwnerDep) -> ImageJob:
    job = _get_image_job(session, image_id, owner)
    params = JobParams.from_stored(job.params)
    return ImageJob(
        id=job.id,
        status=job.status,
        progress=job.progress,
        created_at=int(job.created_at.timestamp()),
        completed_at=int(job.completed_at.timestamp()) if job.completed_at else None,
        model=job.model,
        size=params.size,
        n=params.num_images,
        error=ErrorObject(code=job.error_code, message=job.error_message or "") if job.error_code else None,
    )


@router.api_route("/{image_id}/content", methods=["GET", "HEAD"])  # HEAD: the headers only
def download_image_content(
    image_id: str,
    request: Request,
    services: ServicesDep,
    session: SessionDep,
    owner: OwnerDep,
    index: Annotated[int, Query(ge=0)] = 0,
):  # a stream (200/206) or a redirect (307): see api.content.stream_blob
    job = _get_image_job(session, image_id, owner)
    ensure_servable(job, what=f"Image job '{image_id}'", param="image_id")
    if index >= len(job.output_keys):
        raise bad_request(f"Image job '{image_id}' has {len(job.output_keys)} images.", param="index")
    return stream_blob(request, services, job.output_keys[index], what=f"image '{image_id}'")
