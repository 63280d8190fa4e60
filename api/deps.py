"""Dependencies as `Annotated` aliases: the services a route needs, and who is calling."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from api.errors import APIError, not_found
from api.image_fetch import FetchSlots
from darkroom.keys import owner_of_key
from darkroom.settings import Settings
from storage import jobs
from storage.blobs import BlobStore
from storage.models import Job, JobKind

ANONYMOUS_OWNER = "anonymous"


@dataclass
class Services:
    """Everything a request may touch, built once per app by `api.app.create_app`."""

    settings: Settings
    sessions: sessionmaker[Session]
    blobs: BlobStore
    celery: Celery
    started_at: int  # unix seconds; the `created` of the models this process serves
    image_fetches: FetchSlots  # the image URLs being fetched (api/image_fetch.py)


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_session(services: Annotated[Services, Depends(get_services)]) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


def current_owner(request: Request, services: Annotated[Services, Depends(get_services)]) -> str:
    keys = services.settings.api_keys
    if not keys:
        return ANONYMOUS_OWNER
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise APIError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            code="missing_api_key",
        )
    if not any(hmac.compare_digest(token.encode(), key.encode()) for key in keys):
        raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    return owner_of_key(token)


def get_owned_job(session: Session, job_id: str, owner: str, kinds: tuple[JobKind, ...], what: str) -> Job:
    """The caller's job; another key's job is as absent as one that never existed (404)."""
    job = jobs.get_visible(session, job_id, owner=owner, kinds=kinds)
    if job is None:
        raise not_found(what, job_id, param=f"{what}_id")
    return job


def idempotency_key(request: Request) -> str | None:
    """The caller's `Idempotency-Key` header; a key too long to store is refused, not truncated."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 255:
        raise APIError(400, "The Idempotency-Key header must be 1 to 255 characters.", code="invalid_idempotency_key")
    return key


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]
OwnerDep = Annotated[str, Depends(current_owner)]
