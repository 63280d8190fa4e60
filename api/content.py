"""Serving stored outputs: streamed from the blob store in chunks, never read whole into memory,
with single byte ranges (206) so players can seek; or, when the deployment prefers it and the
store is S3, a 307 to a presigned URL so the bytes never pass through the API."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from api.deps import Services
from api.errors import APIError
from api.ranges import RangeNotSatisfiable, if_range_holds, parse_range
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


def stream_blob(
    request: Request, services: Services, key: str, *, what: str, headers: dict[str, str] | None = None
) -> Response:
    """The blob at `key`, whole or the one byte range the request asks for, or a redirect.

    A HEAD gets the same status and headers as the GET would, and the blob is never opened.
    `headers` go on every answer, the redirect included (a client that does not follow it can
    still read them).
    """
    extra = headers or {}
    settings = services.settings
    if settings.content_redirect:
        # No look at S3 first: a completed, unexpired job's outputs exist (they are stored before
        # it completes, and it is marked expired before they are deleted).
        url = services.blobs.presigned_url(key, settings.content_redirect_ttl_s)
        if url is not None:
            # The URL is a bearer credential that expires: nobody should cache the redirect.
            return RedirectResponse(url, status_code=307, headers={"cache-control": "no-store"} | extra)
    try:
        info = services.blobs.head(key)
    except BlobNotFound:
        raise _gone(what) from None
    headers = {"accept-ranges": "bytes"} | extra
    if info.etag:
        headers["etag"] = info.etag
    byte_range = None
    if if_range_holds(request.headers.get("if-range"), info.etag):
        try:
            byte_range = parse_range(request.headers.get("range"), info.size)
        except RangeNotSatisfiable as error:
            raise APIError(
                416,
                f"The requested range of the content of {what} is not satisfiable: {error}.",
                code="range_not_satisfiable",
                headers=headers | {"content-range": f"bytes */{info.size}"},
            ) from None
    start, end = (0, None) if byte_range is None else (byte_range.start, byte_range.end)
    status, length = (200, info.size) if byte_range is None else (206, byte_range.length)
    if byte_range is not None:
        headers["content-range"] = byte_range.content_range(info.size)
    headers["content-length"] = str(length)
    if request.method == "HEAD":
        # Starlette keeps an explicit content-length on an empty body, as HEAD needs.
        return Response(status_code=status, media_type=info.content_type, headers=headers)
    try:
        chunks = services.blobs.iter_chunks(key, start=start, end=end)
    except BlobNotFound:
        raise _gone(what) from None
    return StreamingResponse(chunks, status_code=status, media_type=info.content_type, headers=headers)


def _gone(what: str) -> APIError:
    return APIError(404, f"The content of {what} is gone.", code="content_not_found")
