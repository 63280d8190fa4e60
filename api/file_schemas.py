"""The Files API's response shapes, as the SDK's `FileObject`, `CursorPage` and `FileDeleted` read them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from api.schemas import ListPage
from storage.models import StoredFile


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: str
    # Deprecated in OpenAI's API, still in its type: a stored file is always processed here.
    status: Literal["processed"] = "processed"
    status_details: str | None = None

    @classmethod
    def from_row(cls, stored: StoredFile) -> FileObject:
        return cls(
            id=stored.id,
            bytes=stored.bytes,
            created_at=int(stored.created_at.timestamp()),
            expires_at=int(stored.expires_at.timestamp()) if stored.expires_at else None,
            filename=stored.filename,
            purpose=stored.purpose,
        )


FileList = ListPage[FileObject]


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
