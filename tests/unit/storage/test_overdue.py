"""The sweeper's queries: which jobs each kind of repair finds, and which it leaves alone (on SQLite
and Postgres: tests/unit/storage/conftest.py). The Postgres database is shared by the session's
tests, so each test looks only at its own jobs."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update

from storage import jobs, overdue
from storage.models import Job, JobKind, JobStatus


def _job(session, **values) -> str:
    job_id = jobs.new_job_id(JobKind.VIDEO)
    jobs.create(session, job_id=job_id, kind=JobKind.VIDEO, model="tiny-wan", owner="o", params={})
    session.commit()
    if values:
        session.execute(update(Job).where(Job.id == job_id).values(**values))
        session.commit()
    return job_id


def _ago(**delta: float) -> datetime:
    return jobs.now() - timedelta(**delta)


def _mine(rows, *mine: str) -> list:
    return [tuple(row) for row in rows if row[0] in mine]


def test_queued_jobs_never_published_are_found_the_oldest_first(sessions):
    with sessions() as session:
        newer = _job(session, published_at=None, created_at=_ago(days=999))
        older = _job(session, published_at=None, created_at=_ago(days=1000))
        published = _job(session)
        running = _job(session, published_at=None, status=JobStatus.IN_PROGRESS)
        found = overdue.unpublished_jobs(session, limit=10_000)
        assert _mine(found, newer, older, published, running) == [(older, "tiny-wan"), (newer, "tiny-wan")]
        assert [row.id for row in overdue.unpublished_jobs(session, limit=1)] == [older]


def test_runs_silent_for_longer_than_given_are_found_with_their_attempt_and_worker(sessions):
    with sessions() as session:
        running = {"status": JobStatus.IN_PROGRESS, "attempts": 2, "worker": "gone:1"}
        silent = _job(session, heartbeat_at=_ago(seconds=31), **running)
        beating = _job(session, heartbeat_at=_ago(seconds=1), **running)
        queued = _job(session, heartbeat_at=_ago(seconds=31))
        found = overdue.silent_runs(session, silent_for=timedelta(seconds=30), limit=10_000)
        assert _mine(found, silent, beating, queued) == [(silent, "tiny-wan", 2, "gone:1")]


def test_queued_jobs_published_long_ago_are_found_the_oldest_first(sessions):
    with sessions() as session:
        newer = _job(session, published_at=_ago(seconds=61), created_at=_ago(days=999))
        older = _job(session, published_at=_ago(seconds=61), created_at=_ago(days=1000))
        recent = _job(session, published_at=_ago(seconds=1))
        unpublished = _job(session, published_at=None)
        minute = timedelta(seconds=60)
        found = overdue.published_long_ago(session, waiting_for=minute, limit=10_000)
        assert _mine(found, newer, older, recent, unpublished) == [(older, "tiny-wan"), (newer, "tiny-wan")]
        assert [row.id for row in overdue.published_long_ago(session, waiting_for=minute, limit=1)] == [older]


def test_completed_jobs_past_their_retention_are_found_once(sessions):
    with sessions() as session:
        completed = {"status": JobStatus.COMPLETED}
        newer = _job(session, expires_at=_ago(days=999), **completed)
        older = _job(session, expires_at=_ago(days=1000), **completed)
        kept = _job(session, expires_at=jobs.now() + timedelta(hours=1), **completed)
        failed = _job(session, expires_at=_ago(days=1), status=JobStatus.FAILED)
        mine = (newer, older, kept, failed)
        assert [job for job in overdue.past_retention(session, limit=10_000) if job in mine] == [older, newer]
        assert overdue.past_retention(session, limit=1) == [older]
        assert jobs.mark_expired(session, older)
        assert [job for job in overdue.past_retention(session, limit=10_000) if job in mine] == [newer]
