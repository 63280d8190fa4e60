"""`Idempotency-Key`s: the job each key's first request created, kept for a window."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from storage.models import IdempotencyKey


def find_live(session: Session, owner: str, key: str, *, created_after: datetime) -> IdempotencyKey | None:
    """The record of `owner`'s `key` if it was made after `created_after`; an older one is
    forgotten here (and committed), so the key is free for a new request."""
    earlier = session.get(IdempotencyKey, (owner, key))
    if earlier is None:
        return None
    if earlier.created_at < created_after:
        session.delete(earlier)
        session.commit()
        return None
    return earlier


def remember(session: Session, owner: str, key: str, *, request_hash: str, job_id: str, created_at: datetime) -> None:
    """Record the key with the job its request created, in the caller's transaction: the job's
    insert and the key commit together, and a second insert of the same key fails the commit."""
    session.add(IdempotencyKey(owner=owner, key=key, request_hash=request_hash, job_id=job_id, created_at=created_at))
