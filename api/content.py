"""Serving stored outputs: streamed from the blob store in chunks, never read whole into memory."""

from __future__ import annotations

from fastapi.responses import StreamingResponse

from api.deps import Services
from api.errors import APIError
from storage.blobs import BlobNotFound
from storage.models import Job, JobStatus


def ensure_servable(job: Job, *, what: str, param: str) -> None:
    """A 404 that says why there is nothing to serve: not finished yet, or past its retention."""
    if job.status != JobStatus.COMPLETED:
        raise APIError(
            404,
            f"{what} is {job.status}; its content exists once it is completed.",
            param=param,
            code="content_not_ready",
        )
    if job.expired_at is not None:
        raise APIError(
            404,
            f"The content of {what} expired at {job.expired_at.isoformat(timespec='seconds')} "
            "and was deleted (results are kept for DARKROOM_RESULT_RETENTION_S).",
            param=param,
            code="content_expired",
        )


def stream_blob(services: Services, key: str, *, what: str) -> StreamingResponse:
    try:
        info = services.blobs.head(key)
        chunks = services.blobs.iter_chunks(key)
    except BlobNotFound:
        raise APIError(404, f"The content of {what} is gone.", code="content_not_found") from None
    return StreamingResponse(
        chunks, media_type=info.content_type, headers={"content-length": str(info.size)}
    )
