"""The jobs the sweeper (worker/sweeper.py) must act on, each kind looked up by one named query:
reads only; the repairs themselves are the conditional updates of storage/jobs.py. The due
webhook events are looked up in storage/webhook_events.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from storage.jobs import now
from storage.models import Job, JobStatus

IdAndModel = Row[tuple[str, str]]


def unpublished_jobs(session: Session, *, limit: int) -> Sequence[IdAndModel]:
    """(id, model) of queued jobs whose id never reached the broker, the oldest first."""
    return session.execute(
        select(Job.id, Job.model)
        .where(Job.status == JobStatus.QUEUED, Job.published_at.is_(None))
        .order_by(Job.created_at)
        .limit(limit)
    ).all()


def silent_runs(
    session: Session, *, silent_for: timedelta, limit: int
) -> Sequence[Row[tuple[str, str, int, str | None]]]:
    """(id, model, attempts, worker) of running jobs with no heartbeat for `silent_for`: their
    worker vanished."""
    return session.execute(
        select(Job.id, Job.model, Job.attempts, Job.worker)
        .where(Job.status == JobStatus.IN_PROGRESS, Job.heartbeat_at < now() - silent_for)
        .limit(limit)
    ).all()


def published_long_ago(session: Session, *, waiting_for: timedelta, limit: int) -> Sequence[IdAndModel]:
    """(id, model) of queued jobs last published more than `waiting_for` ago, the oldest first:
    their message waits in a long queue, or was lost."""
    return session.execute(
        select(Job.id, Job.model)
        .where(Job.status == JobStatus.QUEUED, Job.published_at < now() - waiting_for)
        .order_by(Job.created_at)
        .limit(limit)
    ).all()


def past_retention(session: Session, *, limit: int) -> list[str]:
    """Ids of completed jobs whose results are past their retention and not yet expired, the
    longest past first."""
    return list(
        session.scalars(
            select(Job.id)
            .where(Job.expired_at.is_(None), Job.expires_at < now(), Job.status == JobStatus.COMPLETED)
            .order_by(Job.expires_at)
            .limit(limit)
        )
    )
