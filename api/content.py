"""Serving stored outputs: streamed from the blob store in chunks, never read whole into memory."""

from __future__ import annotations

from fastapi.responses import StreamingResponse

from api.deps import Services
from api.errors import APIError
from storage.blobs import BlobNotFound


def stream_blob(services: Services, key: str, *, what: str) -> StreamingResponse:
    try:
        info = services.blobs.head(key)
        chunks = services.blobs.iter_chunks(key)
    except BlobNotFound:
        raise APIError(404, f"The content of {what} is gone.", code="content_not_found") from None
    return StreamingResponse(
        chunks, media_type=info.content_type, headers={"content-length": str(info.size)}
    )
