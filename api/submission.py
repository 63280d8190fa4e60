"""What every create endpoint does once its body is valid: check it against the model and the
queue caps, answer a repeated Idempotency-Key with its first job, store the inputs, insert the job,
commit, and only then publish the job id."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.bodies import Upload
from api.deps import Services
from api.errors import APIError, bad_request
from api.schemas import GenerationExtensions, VideoRemixRequest
from darkroom.logs import bind
from darkroom.outbound import UnsafeURL, check_url
from darkroom.settings import Settings
from pipelines.spec.registry import REGISTRY, Family, ModelSpec
from storage import jobs
from storage.models import IdempotencyKey, Job, JobKind, JobStatus
from worker.celery_app import publish_generate

log = logging.getLogger("darkroom.api")


def resolve_model(
    services: Services, name: str | None, family: Family, *, also: tuple[Family, ...] = ()
) -> ModelSpec:
    """The served model for this endpoint; without a name, the first served one of `family`.
    A named model may also be of the families in `also` (videos: image-to-video besides)."""
    served = [REGISTRY[served_name] for served_name in services.settings.models]
    accepted = (family, *also)
    if name is None:
        of_family = [spec for spec in served if spec.family == family]
        if not of_family:
            raise bad_request(f"This deployment serves no {family} model.", param="model", code="model_not_found")
        return of_family[0]
    spec = next((spec for spec in served if spec.name == name), None)
    wanted = " or ".join(accepted)
    if spec is None:
        names = ", ".join(s.name for s in served if s.family in accepted) or "none"
        raise bad_request(
            f"The model '{name}' is not served here. {wanted} models served: {names}.",
            param="model",
            code="model_not_found",
        )
    if spec.family not in accepted:
        raise bad_request(
            f"The model '{name}' is a {spec.family} model; this endpoint needs a {wanted} model.",
            param="model",
            code="model_not_supported",
        )
    return spec


def parse_size(spec: ModelSpec, size: str | None, rounded: bool = False) -> tuple[int, int]:
    """`size` as (width, height); "auto" or none: the model's default. `rounded` (images): each
    side is rounded to the model's multiple rather than refused (SizeRule.parse)."""
    if size is None or size == "auto":
        return spec.size.default
    try:
        return spec.size.parse(size, rounded=rounded)
    except ValueError as error:
        raise bad_request(f"{error} for model '{spec.name}'.", param="size") from None


def generation_params(settings: Settings, spec: ModelSpec, body: Any, width: int, height: int) -> dict[str, Any]:
    """The request as the worker will run it, with every default resolved now and recorded.

    Checked against the model here, not in the schema, because the limits differ per model.
    """
    steps = body.num_inference_steps or spec.steps
    if steps > spec.max_steps:
        raise bad_request(
            f"num_inference_steps {steps} is over the most the model '{spec.name}' allows ({spec.max_steps}).",
            param="num_inference_steps",
        )
    if body.negative_prompt is not None and spec.negative_prompt is None:
        raise bad_request(
            f"The model '{spec.name}' takes no negative_prompt: it runs without classifier-free guidance.",
            param="negative_prompt",
            code="unsupported_parameter",
        )
    return {
        "prompt": body.prompt,
        "width": width,
        "height": height,
        "seed": body.seed if body.seed is not None else secrets.randbelow(2**31),
        "num_inference_steps": steps,
        "negative_prompt": body.negative_prompt if body.negative_prompt is not None else spec.negative_prompt,
        "guidance_scale": _scale(spec, body, "guidance_scale"),
        "true_cfg_scale": _scale(spec, body, "true_cfg_scale"),
        "cache": _cache(settings, spec, body),
        "lora": _lora(settings, spec, body),
    }


def _cache(settings: Settings, spec: ModelSpec, body: Any) -> dict[str, Any] | None:
    """The request's cache policy as the job records it; None leaves it to the worker's default."""
    if body.cache is None:
        return None
    if settings.compile_transformer and body.cache.type != "none":
        raise bad_request(
            "This deployment compiles its transformers, and cache policies force a recompile on "
            "every job; send no cache, or {\"type\": \"none\"}.",
            param="cache",
            code="unsupported_parameter",
        )
    if body.cache.type == "magcache" and spec.mag_ratios is None:
        raise bad_request(
            f"The model '{spec.name}' has no calibrated MagCache ratios; "
            "use first_block_cache, taylorseer or none.",
            param="cache",
            code="unsupported_parameter",
        )
    return body.cache.model_dump()


def _lora(settings: Settings, spec: ModelSpec, body: Any) -> list[dict[str, Any]] | None:
    """The request's LoRA adapters as the job records them; None for none. Whether each exists
    and fits the model only the worker can tell: that fails the job (`lora_not_found`, ...)."""
    if not body.lora:
        return None
    if not spec.traits.takes_lora:
        raise bad_request(f"The model '{spec.name}' takes no LoRA adapters.", param="lora", code="unsupported_parameter")
    if settings.compile_transformer:
        raise bad_request(
            "This deployment compiles its transformers, and a LoRA adapter would force a recompile "
            "on every job; send no lora.",
            param="lora",
            code="unsupported_parameter",
        )
    if len(body.lora) > settings.lora_max_per_request:
        raise bad_request(
            f"{len(body.lora)} LoRA adapters requested; at most {settings.lora_max_per_request} per request.",
            param="lora",
        )
    seen: set[str] = set()
    for index, adapter in enumerate(body.lora):
        if adapter.path_or_id in seen:
            raise bad_request(
                f"LoRA '{adapter.path_or_id}' is named twice; name each adapter once, with its scale.",
                param=f"lora[{index}].path_or_id",
            )
        seen.add(adapter.path_or_id)
    return [adapter.model_dump() for adapter in body.lora]


def _scale(spec: ModelSpec, body: Any, name: str) -> float | None:
    """The request's guidance knob `name`, or the model's default; refused if the model has none."""
    default = getattr(spec, name)
    value = getattr(body, name)
    if value is None:
        return default
    if default is None:
        raise bad_request(f"The model '{spec.name}' has no {name}.", param=name, code="unsupported_parameter")
    return value


def submit(
    services: Services,
    session: Session,
    *,
    kind: JobKind,
    spec: ModelSpec,
    owner: str,
    body: GenerationExtensions | VideoRemixRequest,
    params: dict[str, Any],
    uploads: Sequence[Upload] = (),
    idempotency_key: str | None = None,
    remixed_from_video_id: str | None = None,
) -> Job:
    settings = services.settings
    webhook_url = _webhook_url(settings, owner, body.webhook_url)
    request_hash = (
        _fingerprint(kind, body, uploads, remixed_from_video_id) if idempotency_key is not None else ""
    )
    if idempotency_key is not None and (earlier := _replay(settings, session, owner, idempotency_key, request_hash)):
        return earlier
    _admit(settings, session, owner)

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
            params=params,
            input_keys=input_keys,
            webhook_url=webhook_url,
            remixed_from_video_id=remixed_from_video_id,
        )
        if idempotency_key is not None:
            session.add(
                IdempotencyKey(
                    owner=owner, key=idempotency_key, request_hash=request_hash, job_id=job_id, created_at=job.created_at
                )
            )
        session.commit()
    except Exception as error:
        session.rollback()
        services.blobs.delete_prefix(f"inputs/{job_id}")
        # The same key sent twice at once: the first insert won; answer with its job.
        if isinstance(error, IntegrityError) and idempotency_key is not None:
            if earlier := _replay(settings, session, owner, idempotency_key, request_hash):
                return earlier
        raise
    try:
        publish_generate(services.celery, job_id, spec.name)
    except Exception as error:
        # Accepted all the same: the row is the truth, and the sweeper publishes it when it can.
        log.warning("job %s accepted while the queue is unreachable (%s); the sweeper will publish it", job_id, error)
        jobs.mark_unpublished(session, job_id)
    return job


def _webhook_url(settings: Settings, owner: str, requested: str | None) -> str | None:
    url = requested or settings.default_webhook_url_for(owner)
    if url is None:
        return None
    if settings.signing_secret_for(owner) is None:
        raise bad_request(
            "Webhooks are not configured on this deployment: there is no signing secret for this key "
            "(DARKROOM_WEBHOOK_SECRET or DARKROOM_WEBHOOK_KEYS).",
            param="webhook_url",
            code="webhooks_not_configured",
        )
    try:
        check_url(url, allow_http=settings.webhook_allow_http, allowed_hosts=settings.webhook_allowed_hosts)
    except UnsafeURL as error:
        raise bad_request(f"Invalid webhook_url: {error}", param="webhook_url", code="invalid_webhook_url") from None
    return url


def _fingerprint(
    kind: JobKind,
    body: GenerationExtensions | VideoRemixRequest,
    uploads: Sequence[Upload],
    remixed_from_video_id: str | None = None,
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


def _replay(settings: Settings, session: Session, owner: str, key: str, request_hash: str) -> Job | None:
    """The job an earlier request with this Idempotency-Key created, if the key is still live."""
    earlier = session.get(IdempotencyKey, (owner, key))
    if earlier is None:
        return None
    if earlier.created_at < jobs.now() - timedelta(seconds=settings.idempotency_window_s):
        session.delete(earlier)
        session.commit()
        return None
    if earlier.request_hash != request_hash:
        raise APIError(
            409,
            f"The Idempotency-Key '{key}' was already used with a different request (job "
            f"{earlier.job_id}). Use a new key for a new request.",
            code="idempotency_key_reused",
        )
    return session.get(Job, earlier.job_id)


def _admit(settings: Settings, session: Session, owner: str) -> None:
    """Refuse new work past the queue caps; the SDK retries a 429 after Retry-After by itself."""
    queued = select(func.count()).select_from(Job).where(Job.status == JobStatus.QUEUED)
    for count, cap, whose in (
        (session.scalar(queued.where(Job.owner == owner)), settings.max_queued_jobs_per_key, "This key has"),
        (session.scalar(queued), settings.max_queued_jobs, "The server has"),
    ):
        if count >= cap:
            raise APIError(
                429,
                f"{whose} {count} jobs waiting to run, the most allowed. Retry after "
                f"{settings.admission_retry_after_s} s.",
                code="too_many_queued_jobs",
                type="requests",
                headers={"Retry-After": str(min(120, settings.admission_retry_after_s))},
            )
