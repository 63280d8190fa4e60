"""What every create endpoint does once its body is valid: check it against the model, store the
inputs, insert the job, commit, and only then publish the job id."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from sqlalchemy.orm import Session

from api.bodies import Upload
from api.deps import Services
from api.errors import APIError, bad_request
from pipelines.registry import REGISTRY, Family, ModelSpec
from storage import jobs
from storage.models import Job, JobKind
from worker.celery_app import publish_generate

log = logging.getLogger("darkroom.api")


def resolve_model(services: Services, name: str | None, family: Family) -> ModelSpec:
    """The served model for this endpoint; without a name, the first served one of its family."""
    served = [REGISTRY[served_name] for served_name in services.settings.models]
    of_family = [spec for spec in served if spec.family == family]
    if name is None:
        if not of_family:
            raise bad_request(f"This deployment serves no {family} model.", param="model", code="model_not_found")
        return of_family[0]
    spec = next((spec for spec in served if spec.name == name), None)
    if spec is None:
        names = ", ".join(s.name for s in of_family) or "none"
        raise bad_request(
            f"The model '{name}' is not served here. {family} models served: {names}.",
            param="model",
            code="model_not_found",
        )
    if spec.family != family:
        raise bad_request(
            f"The model '{name}' is a {spec.family} model; this endpoint needs a {family} model.",
            param="model",
            code="model_not_supported",
        )
    return spec


def parse_size(spec: ModelSpec, size: str | None) -> tuple[int, int]:
    if size is None or size == "auto":
        return spec.size.default
    try:
        return spec.size.parse(size)
    except ValueError as error:
        raise bad_request(f"{error} for model '{spec.name}'.", param="size") from None


def generation_params(spec: ModelSpec, body: Any, width: int, height: int) -> dict[str, Any]:
    """The request as the worker will run it, with every default resolved now and recorded."""
    return {
        "prompt": body.prompt,
        "width": width,
        "height": height,
        "seed": body.seed if body.seed is not None else secrets.randbelow(2**31),
        "num_inference_steps": body.num_inference_steps or spec.steps,
        "negative_prompt": body.negative_prompt if body.negative_prompt is not None else spec.negative_prompt,
    }


def submit(
    services: Services,
    session: Session,
    *,
    kind: JobKind,
    spec: ModelSpec,
    owner: str,
    params: dict[str, Any],
    uploads: list[Upload] = (),
) -> Job:
    job_id = jobs.new_job_id(kind)
    input_keys = [f"inputs/{job_id}/{index}" for index in range(len(uploads))]
    try:
        for key, upload in zip(input_keys, uploads, strict=True):
            services.blobs.put(key, upload.data, upload.content_type)
        job = jobs.create(
            session, job_id=job_id, kind=kind, model=spec.name, owner=owner, params=params, input_keys=input_keys
        )
        session.commit()
    except Exception:
        session.rollback()
        services.blobs.delete_prefix(f"inputs/{job_id}")
        raise
    try:
        publish_generate(services.celery, job_id, spec.name)
    except Exception as error:
        # Nothing will run it: record why, drop its inputs, and let the client retry.
        log.error("could not publish job %s: %s", job_id, error)
        jobs.fail(session, job_id, code="enqueue_failed", message="The job queue was unreachable.")
        services.blobs.delete_prefix(f"inputs/{job_id}")
        raise APIError(
            503,
            f"The job queue is unreachable; job {job_id} was not started. Try again.",
            code="queue_unavailable",
            type="server_error",
        ) from error
    return job
