"""A repeated `Idempotency-Key`: the same request answered with the job its first try created, a
different request under a used key refused."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from api.bodies import Upload
from api.errors import APIError
from darkroom.settings import Settings
from storage import idempotency, jobs
from storage.models import Job, JobKind


def fingerprint(
    kind: JobKind, body: BaseModel, uploads: Sequence[Upload], remixed_from_video_id: str | None = None
) -> str:
    """What makes two requests the same request: the endpoint, the fields sent, the input bytes."""
    request: dict[str, Any] = {
        "kind": kind,
        "body": body.model_dump(mode="json", exclude_none=True),
        "inputs": [hashlib.sha256(upload.data).hexdigest() for upload in uploads],
    }
    # Only when set, so keys stored before remix existed keep their fingerprints: a remix of
    # another video, or a create with the same prompt, is a different request under one key.
    if remixed_from_video_id is not None:
        request["remixed_from_video_id"] = remixed_from_video_id
    canonical = json.dumps(request, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(settings: Settings, session: Session, owner: str, key: str, request_hash: str) -> Job | None:
    """The job an earlier request with this Idempotency-Key created, if the key is still live."""
    window_start = jobs.now() - timedelta(seconds=settings.idempotency_window_s)
    earlier = idempotency.find_live(session, owner, key, created_after=window_start)
    if earlier is None:
        return None
    # A retry cannot turn either 409 into a success: the SDK, which retries 409s, is told not to.
    final = {"x-should-retry": "false"}
    if earlier.request_hash != request_hash:
        raise APIError(
            409,
            f"The Idempotency-Key '{key}' was already used with a different request (job "
            f"{earlier.job_id}). Use a new key for a new request.",
            code="idempotency_key_reused",
            headers=final,
        )
    job = session.get(Job, earlier.job_id)
    if job.deleted_at is not None:
        # The key is spent: its request made a job, which its owner has since deleted. Answering
        # with the deleted job would show a job that no longer exists; making a new one would run
        # again work its owner threw away, under a key that promises it runs at most once.
        raise APIError(
            409,
            f"The Idempotency-Key '{key}' was used for job {earlier.job_id}, which has since been "
            "deleted. Use a new key to create it again.",
            code="idempotency_key_job_deleted",
            headers=final,
        )
    return job
