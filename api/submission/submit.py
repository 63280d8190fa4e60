"""Insert, commit, then publish: what every create endpoint does once its parameters are built.

The inputs are stored before the row that names them, and removed again if the insert fails; the
job id is handed to the broker only after the commit, so a rolled-back request never leaves a
message behind, and a broker that is down leaves the job `queued` for the sweeper to publish."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.bodies import Upload
from api.deps import Services
from api.submission.admission import admit
from api.submission.idempotency import fingerprint, replay
from api.submission.webhook_url import webhook_url_for
from darkroom.logs import bind
from pipelines.spec.params import JobParams
from pipelines.spec.registry import ModelSpec
from storage import idempotency, jobs
from storage.models import Job, JobKind
from worker.celery_app import publish_generate

log = logging.getLogger("darkroom.api")


def submit(
    services: Services,
    session: Session,
    *,
    kind: JobKind,
    spec: ModelSpec,
    owner: str,
    body: BaseModel,  # the request as sent: its webhook_url, and its fingerprint under a key
    params: JobParams,
    uploads: Sequence[Upload] = (),
    idempotency_key: str | None = None,
    remixed_from_video_id: str | None = None,
) -> Job:
    settings = services.settings
    webhook_url = webhook_url_for(settings, owner, body.webhook_url)
    request_hash = fingerprint(kind, body, uploads, remixed_from_video_id) if idempotency_key is not None else ""
    if idempotency_key is not None and (earlier := replay(settings, session, owner, idempotency_key, request_hash)):
        return earlier
    admit(settings, session, owner)

    job_id = jobs.new_job_id(kind)
    bind(job_id=job_id)  # this request's later lines name the job they made
    input_keys = [f"inputs/{job_id}/{index}" for index in range(len(uploads))]
    try:
        for key, upload in zip(input_keys, uploads, strict=True):
            services.blobs.put(key, upload.data, upload.content_type)
        job = jobs.create(
            session,
            job_id=job_id,
            kind=kind,
            model=spec.name,
            owner=owner,
            params=params.to_stored(),
            input_keys=input_keys,
            webhook_url=webhook_url,
            remixed_from_video_id=remixed_from_video_id,
        )
        if idempotency_key is not None:
            idempotency.remember(
                session, owner, idempotency_key, request_hash=request_hash, job_id=job_id, created_at=job.created_at
            )
        session.commit()
    except Exception as error:
        session.rollback()
        services.blobs.delete_prefix(f"inputs/{job_id}")
        # The same key sent twice at once: the first insert won; answer with its job.
        if isinstance(error, IntegrityError) and idempotency_key is not None:
            if earlier := replay(settings, session, owner, idempotency_key, request_hash):
                return earlier
        raise
    try:
        publish_generate(services.celery, job_id, spec.name)
    except Exception as error:
        # Accepted all the same: the row is the truth, and the sweeper publishes it when it can.
        log.warning("job %s accepted while the queue is unreachable (%s); the sweeper will publish it", job_id, error)
        jobs.mark_unpublished(session, job_id)
    return job
