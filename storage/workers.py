"""Worker presence rows: each worker process inserts its row when it starts, refreshes it from a
heartbeat thread, and marks it stopped when it shuts down cleanly. Readers decide "lost" from
the age of the heartbeat against the interval the worker itself declared."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from storage.jobs import now
from storage.models import Worker

# A worker is lost after this many of its own heartbeat intervals without one.
LOST_AFTER_INTERVALS = 3


class WorkerState(StrEnum):
    ONLINE = "online"
    LOST = "lost"  # silent for longer than its heartbeat window: killed, hung or cut off
    STOPPED = "stopped"  # shut down cleanly


def state_of(worker: Worker, at: datetime) -> WorkerState:
    if worker.stopped_at is not None:
        return WorkerState.STOPPED
    window = timedelta(seconds=worker.heartbeat_interval_s * LOST_AFTER_INTERVALS)
    return WorkerState.LOST if at - worker.heartbeat_at > window else WorkerState.ONLINE


def register(session: Session, worker_id: str, **description: Any) -> None:
    """Insert (or, for a pid reused on the same host, replace) the row of a starting worker."""
    started = now()
    session.execute(delete(Worker).where(Worker.id == worker_id))
    session.add(
        Worker(
            id=worker_id,
            started_at=started,
            heartbeat_at=started,
            jobs_completed=0,
            jobs_failed=0,
            memory={},
            histograms={},
            **description,
        )
    )
    session.commit()


def beat(session: Session, worker_id: str, **state: Any) -> None:
    session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(heartbeat_at=now(), **state)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def mark_stopped(session: Session, worker_id: str) -> None:
    session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(stopped_at=now(), current_job_id=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def all_workers(session: Session) -> list[Worker]:
    return list(session.scalars(select(Worker).order_by(Worker.role, Worker.host, Worker.started_at)))


def forget_older_than(session: Session, age: timedelta) -> int:
    """Drop rows of workers silent for `age`: the list stays about the fleet of today. Their
    histogram counts leave `/metrics` with them, which Prometheus reads as a counter reset."""
    result = session.execute(delete(Worker).where(Worker.heartbeat_at < now() - age))
    session.commit()
    return result.rowcount or 0
