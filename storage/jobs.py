"""Every change of a job row goes through this module, each as a compare-and-set on the row: its
status (the state machine below), and the bookkeeping that leaves the status alone (published,
progress and previews of the running attempt, expired, deleted).

State machine:

    queued ──claim──▶ in_progress ──complete──▶ completed
      ▲  │                │  └──────fail──────▶ failed
      │  │                ├──────cancel────────▶ cancelled
      │  │                └──requeue (its worker vanished; the sweeper)──┐
      │  ├──────fail (never ran: e.g. its model is gone)──▶ failed        │
      │  └──────cancel────────▶ cancelled                                 │
      └───────────────────────────────────────────────────────────────────┘

completed, failed and cancelled are terminal. Each transition is one
`UPDATE jobs SET ... WHERE id = :id AND status IN (<states it may leave>)`: whoever changes the row
first wins, so a redelivered message cannot run a finished job twice, and a worker cannot complete
a job that was cancelled under it. A function returns whether its update took effect.

A worker's own updates also name the attempt they belong to (`attempts` is bumped by each claim):
a worker presumed lost whose job was requeued and claimed again can no longer write to it, so two
runs of one job can never both complete it. Reaching a terminal state writes the job's webhook
event (storage/webhook_events.py) in the same transaction, so an event is never lost between the two.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from storage import webhook_events
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
    QUEUED: frozenset({IN_PROGRESS}),
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
    webhook_url: str | None = None,
    remixed_from_video_id: str | None = None,
) -> Job:
    """Add a queued job to the session; the caller commits, then publishes its id, and calls
    `mark_unpublished` if that fails (the row says published from the start, so the common path
    costs no second write)."""
    created = now()
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
        created_at=created,
        published_at=created,
        webhook_url=webhook_url,
        remixed_from_video_id=remixed_from_video_id,
    )
    session.add(job)
    return job


def _update(session: Session, conditions: tuple[ColumnElement[bool], ...], **values: Any) -> bool:
    """One conditional UPDATE of a job row that leaves its status alone, committed; whether the
    row still met the conditions."""
    result = session.execute(
        update(Job).where(*conditions).values(**values).execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def _still_queued(job_id: str) -> tuple[ColumnElement[bool], ...]:
    return Job.id == job_id, Job.status == QUEUED


def _owned_by(job_id: str, attempt: int) -> tuple[ColumnElement[bool], ...]:
    """The job runs, in this attempt."""
    return Job.id == job_id, Job.status == IN_PROGRESS, Job.attempts == attempt


def mark_unpublished(session: Session, job_id: str) -> None:
    """Its id never reached the broker: the sweeper publishes it once the broker is back."""
    _update(session, _still_queued(job_id), published_at=None)


def mark_published(session: Session, job_id: str) -> bool:
    """The sweeper handed its id to the broker (again); False if it left the queue meanwhile."""
    return _update(session, _still_queued(job_id), published_at=now())


def _transition(
    session: Session, job_id: str, target: JobStatus, *, attempt: int | None = None, **values: Any
) -> bool:
    """Move the job to `target` if it is in an allowed source state (and, for a worker's own
    update, still in the attempt that worker claimed); commit; say whether it moved."""
    conditions = [Job.id == job_id, Job.status.in_(ALLOWED_SOURCES[target])]
    if attempt is not None:
        conditions.append(Job.attempts == attempt)
    moved = session.execute(
        update(Job)
        .where(*conditions)
        .values(status=target, **values)
        .returning(Job.kind, Job.webhook_url)
        .execution_options(synchronize_session=False)
    ).first()
    if moved is not None and target in TERMINAL and moved.webhook_url:
        webhook_events.create(
            session,
            job_id=job_id,
            event_type=f"{'video' if moved.kind == JobKind.VIDEO else 'image'}.{target}",
            url=moved.webhook_url,
        )
    session.commit()
    return moved is not None


def claim(session: Session, job_id: str, worker: str) -> Job | None:
    """queued -> in_progress for this worker, as a new attempt; None if the job is not queued
    (it ran, was cancelled, or another worker claimed it first)."""
    started = now()
    if not _transition(
        session,
        job_id,
        IN_PROGRESS,
        worker=worker,
        started_at=started,
        heartbeat_at=started,
        progress=0,
        attempts=Job.attempts + 1,
        partial_keys=[],  # a new attempt makes its own previews
    ):
        return None
    return session.get(Job, job_id, populate_existing=True)


def requeue(session: Session, job_id: str, *, attempt: int) -> bool:
    """in_progress -> queued for a job whose worker vanished, so the sweeper can publish it again;
    only for the attempt found stale (a worker that came back meanwhile keeps its job)."""
    return _transition(
        session, job_id, QUEUED, attempt=attempt, worker=None, heartbeat_at=None, progress=0, published_at=None
    )


def heartbeat(session: Session, job_id: str, *, attempt: int, progress: int) -> bool:
    """A running attempt's sign of life with its progress; False means it should stop: the job
    was cancelled, failed by its time limit, or requeued and claimed by another worker."""
    progress = max(0, min(99, progress))  # 100 only when completed
    return _update(session, _owned_by(job_id, attempt), progress=progress, heartbeat_at=now())


def record_partials(session: Session, job_id: str, *, attempt: int, partial_keys: list[str]) -> bool:
    """The previews this running attempt has stored so far (the whole list: one writer per
    attempt); False if the attempt no longer owns the job."""
    return _update(session, _owned_by(job_id, attempt), partial_keys=list(partial_keys))


def is_running(session: Session, job_id: str, *, attempt: int) -> bool:
    """Whether this attempt still owns the job: a read, cheap enough to ask every fraction of a step."""
    found = session.scalar(select(Job.id).where(*_owned_by(job_id, attempt)))
    session.rollback()  # end the read transaction, so the next look sees new commits
    return found is not None


def complete(
    session: Session,
    job_id: str,
    *,
    attempt: int | None = None,
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
        attempt=attempt,
        progress=100,
        output_keys=output_keys,
        output_meta=output_meta,
        timings=timings,
        completed_at=finished,
        expires_at=finished + retention,
    )


def fail(
    session: Session,
    job_id: str,
    *,
    code: str,
    message: str,
    attempt: int | None = None,
    timings: dict[str, float] | None = None,
) -> bool:
    values: dict[str, Any] = {"error_code": code, "error_message": message, "completed_at": now()}
    if timings is not None:
        values["timings"] = timings
    return _transition(session, job_id, FAILED, attempt=attempt, **values)


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
    not_deleted = (Job.id == job_id, Job.deleted_at.is_(None))
    _update(session, not_deleted, deleted_at=now(), input_keys=[], output_keys=[])


def mark_expired(session: Session, job_id: str) -> bool:
    """Its results are past their retention and about to be deleted: from now on `/content` says
    "expired". False if another sweeper marked it first."""
    return _update(session, (Job.id == job_id, Job.expired_at.is_(None)), expired_at=now())


def unmark_expired(session: Session, job_id: str) -> None:
    """Its blobs could not be deleted (the store is away): the next retention pass tries again."""
    _update(session, (Job.id == job_id, Job.expired_at.is_not(None)), expired_at=None)


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


def queued_count(session: Session, *, owner: str | None = None) -> int:
    """Jobs waiting to run: all of them, or `owner`'s."""
    query = select(func.count()).select_from(Job).where(Job.status == QUEUED)
    if owner is not None:
        query = query.where(Job.owner == owner)
    return session.scalar(query)
