"""Every change of a `files` row, and the look-ups the API and the sweeper make.

A file's bytes are in the blob store at `blob_key(id)`; its row says whose they are, what for and
until when. A file is visible to its owner (on every route, and as a `file_id` anywhere one is
taken) until it is deleted or its `expires_at` passes. Deleting is two steps, blob first, then
the row marked deleted: `DELETE /v1/files/{id}` expires the row at once, so nothing can name the
file from then on, and the sweeper (worker/retention.py) finishes whatever the request could not.
The row stays as the record of what was stored.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, or_, select, tuple_, update
from sqlalchemy.orm import Session

from storage.jobs import now
from storage.models import StoredFile


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def blob_key(file_id: str) -> str:
    return f"files/{file_id}"


def create(
    session: Session,
    *,
    file_id: str,
    owner: str,
    purpose: str,
    filename: str,
    size: int,
    content_type: str,
    expires_at: datetime | None,
    line_count: int | None = None,
    created_at: datetime | None = None,
) -> StoredFile:
    """Add a file's row to the session; the caller commits, once its bytes are stored.
    `created_at` (default now) lets a caller compute `expires_at` from the same moment."""
    stored = StoredFile(
        id=file_id,
        owner=owner,
        purpose=purpose,
        filename=filename,
        bytes=size,
        content_type=content_type,
        line_count=line_count,
        created_at=created_at or now(),
        expires_at=expires_at,
    )
    session.add(stored)
    return stored


def _live() -> tuple[ColumnElement[bool], ...]:
    return StoredFile.deleted_at.is_(None), or_(StoredFile.expires_at.is_(None), StoredFile.expires_at > now())


def get_visible(session: Session, file_id: str, *, owner: str) -> StoredFile | None:
    """The file if it exists, belongs to `owner`, and is neither deleted nor expired."""
    return session.scalar(select(StoredFile).where(StoredFile.id == file_id, StoredFile.owner == owner, *_live()))


def get_owned(session: Session, file_id: str, *, owner: str) -> StoredFile | None:
    """The owner's file, visible or not: where a listing that was paging through it resumes."""
    return session.scalar(select(StoredFile).where(StoredFile.id == file_id, StoredFile.owner == owner))


def list_visible(
    session: Session,
    *,
    owner: str,
    limit: int,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
    after: StoredFile | None = None,
) -> list[StoredFile]:
    """Up to `limit` of the owner's visible files in creation order (ties by id), those past the
    file `after` when one is given."""
    query = select(StoredFile).where(StoredFile.owner == owner, *_live())
    if purpose is not None:
        query = query.where(StoredFile.purpose == purpose)
    position = tuple_(StoredFile.created_at, StoredFile.id)
    if after is not None:
        cursor = tuple_(after.created_at, after.id)
        query = query.where(position > cursor if order == "asc" else position < cursor)
    if order == "asc":
        query = query.order_by(StoredFile.created_at.asc(), StoredFile.id.asc())
    else:
        query = query.order_by(StoredFile.created_at.desc(), StoredFile.id.desc())
    return list(session.scalars(query.limit(limit)))


def _update(session: Session, conditions: tuple[ColumnElement[bool], ...], **values: object) -> bool:
    result = session.execute(
        update(StoredFile).where(*conditions).values(**values).execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def expire_now(session: Session, file_id: str) -> bool:
    """Make a visible file expired from this moment: no route or reference reaches it any more.
    False if it was already deleted or expired (another request deleted it first)."""
    return _update(session, (StoredFile.id == file_id, *_live()), expires_at=now())


def mark_deleted(session: Session, file_id: str) -> bool:
    """Its blob is deleted: record it. False if it was recorded already."""
    return _update(session, (StoredFile.id == file_id, StoredFile.deleted_at.is_(None)), deleted_at=now())


def past_expiry(session: Session, *, limit: int) -> list[str]:
    """Ids of files past their `expires_at` whose blob is not yet deleted, the longest past first."""
    return list(
        session.scalars(
            select(StoredFile.id)
            .where(StoredFile.deleted_at.is_(None), StoredFile.expires_at <= now())
            .order_by(StoredFile.expires_at)
            .limit(limit)
        )
    )
