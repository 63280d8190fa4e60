"""`/v1/files` as the official SDK calls it: upload, list, retrieve, download, delete.

A file belongs to the key that uploaded it (a batch's output files, to the batch's key); any other
key gets a 404 on every route, as for an id that never existed. The bytes are at
`storage.files.blob_key(id)`; uploads stream there (api/file_intake.py) and downloads stream back
(api/content.py: ranges, HEAD, the presigned redirect).
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from api.content import stream_blob
from api.deps import OwnerDep, Services, ServicesDep, SessionDep
from api.errors import bad_request, not_found
from api.file_intake import ReceivedFile, receive_file
from api.file_schemas import FileDeleted, FileList, FileObject
from storage import files
from storage.jobs import now
from storage.models import StoredFile

router = APIRouter(prefix="/v1/files", tags=["files"])
log = logging.getLogger("darkroom.api")


@router.post("", response_model=FileObject)
async def upload_file(request: Request, services: ServicesDep, owner: OwnerDep) -> FileObject:
    file_id = files.new_file_id()
    received = await receive_file(request, services.settings, services.blobs, files.blob_key(file_id))
    stored = await run_in_threadpool(_record, services, owner, file_id, received)
    return FileObject.from_row(stored)


def _record(services: Services, owner: str, file_id: str, received: ReceivedFile) -> StoredFile:
    """The row of a file whose bytes are stored; if it cannot be written, the bytes go too."""
    created = now()
    with services.sessions() as session:
        try:
            stored = files.create(
                session,
                file_id=file_id,
                owner=owner,
                purpose=received.purpose,
                filename=received.filename,
                size=received.size,
                content_type=received.content_type,
                expires_at=created + received.lifetime if received.lifetime is not None else None,
                line_count=received.line_count,
                created_at=created,
            )
            session.commit()
        except BaseException:
            session.rollback()
            _delete_blob(services, file_id)
            raise
    return stored


def _delete_blob(services: Services, file_id: str) -> bool:
    """Delete the file's blob; False (and a warning) if the store failed."""
    try:
        services.blobs.delete(files.blob_key(file_id))
    except Exception as error:  # noqa: BLE001 - S3 and filesystem errors share no base class
        log.warning("file %s: its blob could not be deleted (%s)", file_id, error)
        return False
    return True


def _get_file(session: Session, file_id: str, owner: str) -> StoredFile:
    stored = files.get_visible(session, file_id, owner=owner)
    if stored is None:
        raise not_found("file", file_id, param="file_id")
    return stored


@router.get("", response_model=FileList)
def list_files(
    session: SessionDep,
    owner: OwnerDep,
    purpose: str | None = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    cursor = None
    if after is not None:
        cursor = files.get_owned(session, after, owner=owner)
        if cursor is None:
            raise bad_request(f"No file found with id '{after}' to list after.", param="after")
    rows = files.list_visible(session, owner=owner, limit=limit + 1, order=order, purpose=purpose, after=cursor)
    return FileList.of(rows, limit, FileObject.from_row)


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, session: SessionDep, owner: OwnerDep) -> FileObject:
    return FileObject.from_row(_get_file(session, file_id, owner))


@router.api_route("/{file_id}/content", methods=["GET", "HEAD"])
def download_file_content(
    file_id: str, request: Request, services: ServicesDep, session: SessionDep, owner: OwnerDep
) -> Response:
    _get_file(session, file_id, owner)
    return stream_blob(request, services, files.blob_key(file_id), what=f"file '{file_id}'")


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(file_id: str, services: ServicesDep, session: SessionDep, owner: OwnerDep) -> FileDeleted:
    _get_file(session, file_id, owner)
    # Expired first: from this moment no route and no `file_id` reference can reach it.
    if not files.expire_now(session, file_id):
        raise not_found("file", file_id, param="file_id")  # another request deleted it meanwhile
    # Deleted for the caller either way: if the store is away, the sweeper deletes the blob of an
    # expired file later.
    if _delete_blob(services, file_id):
        files.mark_deleted(session, file_id)
    return FileDeleted(id=file_id)
