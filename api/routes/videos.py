"""`/v1/videos` as the official SDK calls it: create, retrieve, list, delete, remix, download."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from api.bodies import read_body
from api.content import ensure_servable, stream_blob
from api.deps import OwnerDep, Services, ServicesDep, SessionDep, get_owned_job, idempotency_key
from api.errors import APIError, bad_request
from api.input_reference import HOW_TO_SEND, read_reference, reference_source
from api.remix import remixable_model, source_inputs
from api.schemas import Video, VideoCreateRequest, VideoDeleted, VideoList, VideoRemixRequest
from api.submission.model_choice import parse_size, resolve_model
from api.submission.params import check_inputs, remix_params, video_length, video_params
from api.submission.submit import submit
from pipelines.spec.registry import Family
from storage import jobs
from storage.models import Job, JobKind, JobStatus

router = APIRouter(prefix="/v1/videos", tags=["videos"])
VIDEO_KINDS = (JobKind.VIDEO,)


@router.post("", response_model=Video)
async def create_video(request: Request, services: ServicesDep, session: SessionDep, owner: OwnerDep) -> Video:
    settings = services.settings
    body, files = await read_body(request, VideoCreateRequest, file_fields=("input_reference",), settings=settings)
    reference = reference_source(body, files)
    # Without a model, an input image picks the first image-to-video model, else text-to-video.
    default_family = Family.IMAGE_TO_VIDEO if reference is not None else Family.TEXT_TO_VIDEO
    spec = resolve_model(
        services, body.model, default_family, also=(Family.TEXT_TO_VIDEO, Family.IMAGE_TO_VIDEO)
    )
    if spec.family == Family.TEXT_TO_VIDEO and reference is not None:
        raise bad_request(
            f"The model '{spec.name}' is text-to-video and takes no input_reference.",
            param="input_reference",
            code="unsupported_parameter",
        )
    if spec.family == Family.IMAGE_TO_VIDEO and reference is None:
        raise bad_request(
            f"The model '{spec.name}' is image-to-video: it needs the image the video starts "
            f"from. {HOW_TO_SEND}",
            param="input_reference",
            code="missing_required_parameter",
        )
    length = video_length(spec, body.seconds)
    # The size is checked before the image is fetched: a bad request costs no download.
    size = parse_size(spec, body.size) if body.size not in (None, "auto") else None
    uploads = [await read_reference(reference, services, owner)] if reference is not None else []
    check_inputs(spec, uploads)
    if size is None:
        # An image-to-video model runs at its trained area, in the input image's aspect ratio.
        image = uploads[0] if uploads else None
        size = spec.size.fit(image.width, image.height, upscale=True) if image else spec.size.default
    params = video_params(settings, spec, body, size, length)
    job = await run_in_threadpool(
        submit,
        services,
        session,
        kind=JobKind.VIDEO,
        spec=spec,
        owner=owner,
        body=body,
        params=params,
        uploads=uploads,
        idempotency_key=idempotency_key(request),
    )
    return Video.from_job(job)


def _poll_after_ms(job: Job) -> int:
    """How long the SDK's poller should sleep: the estimated time left, within [50 ms, 2 s]."""
    if job.status == JobStatus.IN_PROGRESS and job.progress > 0 and job.started_at is not None:
        elapsed_ms = (jobs.now() - job.started_at).total_seconds() * 1000
        remaining_ms = elapsed_ms * (100 - job.progress) / job.progress
        return int(min(2000, max(50, remaining_ms)))
    return 200


def _get_video(session, video_id: str, owner: str) -> Job:
    return get_owned_job(session, video_id, owner, VIDEO_KINDS, "video")


@router.get("/{video_id}", response_model=Video)
def retrieve_video(video_id: str, response: Response, session: SessionDep, owner: OwnerDep) -> Video:
    job = _get_video(session, video_id, owner)
    if job.status in (JobStatus.QUEUED, JobStatus.IN_PROGRESS):
        response.headers["openai-poll-after-ms"] = str(_poll_after_ms(job))
    return Video.from_job(job)


@router.get("", response_model=VideoList)
def list_videos(
    session: SessionDep,
    owner: OwnerDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> VideoList:
    query = select(Job).where(Job.owner == owner, Job.kind == JobKind.VIDEO, Job.deleted_at.is_(None))
    if after is not None:
        cursor = jobs.get_visible(session, after, owner=owner, kinds=VIDEO_KINDS)
        if cursor is None:
            raise bad_request(f"No video found with id '{after}' to list after.", param="after")
        position = tuple_(Job.created_at, Job.id)
        cursor_position = tuple_(cursor.created_at, cursor.id)
        query = query.where(position > cursor_position if order == "asc" else position < cursor_position)
    sort = (Job.created_at.asc(), Job.id.asc()) if order == "asc" else (Job.created_at.desc(), Job.id.desc())
    rows = list(session.scalars(query.order_by(*sort).limit(limit + 1)))
    return VideoList.of(rows, limit, Video.from_job)


@router.delete("/{video_id}", response_model=VideoDeleted)
def delete_video(video_id: str, services: ServicesDep, session: SessionDep, owner: OwnerDep) -> VideoDeleted:
    job = _get_video(session, video_id, owner)
    # A queued job never starts; a running one stops at its next progress write and publishes nothing.
    jobs.cancel(session, job.id)
    jobs.mark_deleted(session, job.id)
    services.blobs.delete_prefix(f"inputs/{job.id}")
    services.blobs.delete_prefix(f"outputs/{job.id}")
    return VideoDeleted(id=job.id)


@router.post("/{video_id}/remix", response_model=Video)
async def remix_video(
    video_id: str, request: Request, services: ServicesDep, session: SessionDep, owner: OwnerDep
) -> Video:
    body, _ = await read_body(request, VideoRemixRequest, file_fields=(), settings=services.settings)
    key = idempotency_key(request)
    job = await run_in_threadpool(_remix, services, session, owner, video_id, body, key)
    return Video.from_job(job)


def _remix(
    services: Services,
    session: Session,
    owner: str,
    video_id: str,
    body: VideoRemixRequest,
    key: str | None,
) -> Job:
    source = _get_video(session, video_id, owner)
    return submit(
        services,
        session,
        kind=JobKind.VIDEO,
        spec=remixable_model(source, services.settings.models),
        owner=owner,
        body=body,
        params=remix_params(source, body.prompt),
        # An image-to-video source's first frame, stored again as the remix's own input.
        uploads=source_inputs(source, services.blobs),
        idempotency_key=key,
        remixed_from_video_id=source.id,
    )


# HEAD answers what GET would (size, type, ETag, a range's 206) without the bytes: players and
# download managers ask it before they fetch.
@router.api_route("/{video_id}/content", methods=["GET", "HEAD"])
def download_video_content(
    video_id: str,
    request: Request,
    services: ServicesDep,
    session: SessionDep,
    owner: OwnerDep,
    variant: Literal["video", "thumbnail", "spritesheet"] = "video",
) -> Response:
    job = _get_video(session, video_id, owner)
    ensure_servable(job, what=f"Video '{video_id}'", param="video_id")
    if variant == "video":
        return stream_blob(request, services, job.output_keys[0], what=f"video '{video_id}'")
    # The worker records each still's key and layout next to the MP4's facts (worker/execute.py).
    still = (job.output_meta or {}).get(variant)
    if still is None:
        raise APIError(
            404,
            f"Video '{video_id}' has no {variant}: it was made before Darkroom made thumbnails and "
            "spritesheets. Its video variant is available.",
            param="variant",
            code="variant_not_available",
        )
    headers = {SPRITESHEET_LAYOUT_HEADER: spritesheet_layout(still)} if variant == "spritesheet" else None
    return stream_blob(request, services, still["key"], what=f"the {variant} of video '{video_id}'", headers=headers)


SPRITESHEET_LAYOUT_HEADER = "x-spritesheet-layout"


def spritesheet_layout(still: dict) -> str:
    """The grid as a header: tiles are row-major in time order, `frames` are their frame indices."""
    frames = ",".join(str(index) for index in still["frames"])
    return (
        f"columns={still['columns']}; rows={still['rows']}; "
        f"tile={still['tile_width']}x{still['tile_height']}; frames={frames}"
    )
