"""Every change of a job's status goes through this module, as a compare-and-set on the row.

State machine:

    queued ──claim──▶ in_progress ──complete──▶ completed
      │                   │  └──────fail──────▶ failed
      │                   └──────cancel────────▶ cancelled
      ├──────fail (never ran: e.g. it could not be published)──▶ failed
      └──────cancel────────▶ cancelled

completed, failed and cancelled are terminal. Each transition is one
`UPDATE jobs SET ... WHERE id = :id AND status IN (<states it may leave>)`: whoever changes the row
first wins, so a redelivered message cannot run a finished job twice, and a worker cannot complete
a job that was cancelled under it. A function returns whether its update took effect.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import Job, JobKind, JobStatus

QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELLED = (
    JobStatus.QUEUED,
    JobStatus.IN_PROGRESS,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})

# target status -> the statuses a job may be in to move there.
ALLOWED_SOURCES: dict[JobStatus, frozenset[JobStatus]] = {
    IN_PROGRESS: frozenset({QUEUED}),
    COMPLETED: frozenset({IN_PROGRESS}),
    FAILED: frozenset({QUEUED, IN_PROGRESS}),
    CANCELLED: frozenset({QUEUED, IN_PROGRESS}),
}

_ID_PREFIX = {JobKind.VIDEO: "video_", JobKind.IMAGE_GENERATION: "img_", JobKind.IMAGE_EDIT: "img_"}


def now() -> datetime:
    return datetime.now(UTC)


def new_job_id(kind: JobKind) -> str:
    return _ID_PREFIX[kind] + secrets.token_hex(12)


def create(
    session: Session,
    *,
    job_id: str,
    kind: JobKind,
    model: str,
    owner: str,
    params: dict[str, Any],
    input_keys: Iterable[str] = (),
) -> Job:
    """Add a queued job to the session; the caller commits, then publishes its id."""
    job = Job(
        id=job_id,
        kind=kind,
        model=model,
        status=QUEUED,
        progress=0,
        params=params,
        input_keys=list(input_keys),
        output_keys=[],
        output_meta={},
        owner=owner,
        attempts=0,
        timings={},
        created_at=now(),
    )
    session.add(job)
    return job


def _transition(session: Session, job_id: str, target: JobStatus, **values: Any) -> bool:
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(ALLOWED_SOURCES[target]))
        .values(status=target, **values)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def claim(session: Session, job_id: str, worker: str) -> Job | None:
    """queued -> in_progress for this worker; None if the job is not queued (ran, or cancelled)."""
    if not _transition(
        session, job_id, IN_PROGRESS, worker=worker, started_at=now(), attempts=Job.attempts + 1
    ):
        return None
    return session.get(Job, job_id, populate_existing=True)


def record_progress(session: Session, job_id: str, progress: int) -> bool:
    """Write progress of a running job; False means it is no longer running (cancelled)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == IN_PROGRESS)
        .values(progress=max(0, min(99, progress)))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def complete(
    session: Session,
    job_id: str,
    *,
    output_keys: list[str],
    output_meta: dict[str, Any],
    timings: dict[str, float],
    retention: timedelta,
) -> bool:
    """in_progress -> completed. Call only after every output is stored."""
    finished = now()
    return _transition(
        session,
        job_id,
        COMPLETED,
        progress=100,
        output_keys=output_keys,
        output_meta=output_meta,
        timings=timings,
        completed_at=finished,
        expires_at=finished + retention,
    )


def fail(
    session: Session, job_id: str, *, code: str, message: str, timings: dict[str, float] | None = None
) -> bool:
    values: dict[str, Any] = {"error_code": code, "error_message": message, "completed_at": now()}
    if timings is not None:
        values["timings"] = timings
    return _transition(session, job_id, FAILED, **values)


def cancel(session: Session, job_id: str) -> bool:
    return _transition(
        session,
        job_id,
        CANCELLED,
        error_code="cancelled",
        error_message="The job was deleted before it finished.",
        completed_at=now(),
    )


def mark_deleted(session: Session, job_id: str) -> None:
    """Hide the job from the API; its row stays as the record of what happened."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.deleted_at.is_(None))
        .values(deleted_at=now(), input_keys=[], output_keys=[])
        .execution_options(synchronize_session=False)
    )
    session.commit()


def get_visible(session: Session, job_id: str, *, owner: str, kinds: Iterable[JobKind]) -> Job | None:
    """The job if it exists, belongs to `owner`, is of one of `kinds` and was not deleted."""
    return session.scalar(
        select(Job).where(
            Job.id == job_id,
            Job.owner == owner,
            Job.kind.in_(list(kinds)),
            Job.deleted_at.is_(None),
        )
    )


def status_of(session: Session, job_id: str) -> JobStatus | None:
    value = session.scalar(select(Job.status).where(Job.id == job_id))
    return JobStatus(value) if value is not None else None
