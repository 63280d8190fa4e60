"""The job state machine: every allowed transition takes effect, every other one is refused,
on SQLite and on the machine's real Postgres (schema built by the migrations)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import update

from storage import jobs
from storage.db import make_engine, make_session_factory, upgrade_schema
from storage.models import Job, JobKind, JobStatus


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade_schema(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


def _job_in(session, status: JobStatus) -> str:
    job_id = jobs.new_job_id(JobKind.VIDEO)
    jobs.create(session, job_id=job_id, kind=JobKind.VIDEO, model="tiny-wan", owner="o", params={})
    session.commit()
    session.execute(update(Job).where(Job.id == job_id).values(status=status))
    session.commit()
    return job_id


def _apply(session, job_id: str, target: JobStatus) -> bool:
    if target == JobStatus.IN_PROGRESS:
        return jobs.claim(session, job_id, "w1") is not None
    if target == JobStatus.COMPLETED:
        return jobs.complete(
            session, job_id, output_keys=["k"], output_meta={}, timings={}, retention=timedelta(days=1)
        )
    if target == JobStatus.FAILED:
        return jobs.fail(session, job_id, code="x", message="y")
    return jobs.cancel(session, job_id)


ALLOWED = {
    (JobStatus.QUEUED, JobStatus.IN_PROGRESS),
    (JobStatus.QUEUED, JobStatus.FAILED),
    (JobStatus.QUEUED, JobStatus.CANCELLED),
    (JobStatus.IN_PROGRESS, JobStatus.COMPLETED),
    (JobStatus.IN_PROGRESS, JobStatus.FAILED),
    (JobStatus.IN_PROGRESS, JobStatus.CANCELLED),
}
TARGETS = [JobStatus.IN_PROGRESS, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]


@pytest.mark.parametrize("source,target", list(itertools.product(list(JobStatus), TARGETS)))
def test_transition(sessions, source, target):
    with sessions() as session:
        job_id = _job_in(session, source)
        changed = _apply(session, job_id, target)
        assert changed == ((source, target) in ALLOWED)
        assert jobs.status_of(session, job_id) == (target if changed else source)


def test_claim_records_worker_attempt_and_start(sessions):
    with sessions() as session:
        job_id = _job_in(session, JobStatus.QUEUED)
        job = jobs.claim(session, job_id, "worker-a")
        assert (job.status, job.worker, job.attempts) == ("in_progress", "worker-a", 1)
        assert job.started_at is not None
        # A second claim (a redelivered message) finds the job taken and changes nothing.
        assert jobs.claim(session, job_id, "worker-b") is None
        session.expire_all()
        assert session.get(Job, job_id).worker == "worker-a"


def test_complete_sets_outputs_progress_and_expiry(sessions):
    with sessions() as session:
        job_id = _job_in(session, JobStatus.IN_PROGRESS)
        assert jobs.complete(
            session, job_id, output_keys=["outputs/x/0.png"], output_meta={"a": 1}, timings={"t": 1.0},
            retention=timedelta(hours=2),
        )
        session.expire_all()
        job = session.get(Job, job_id)
        assert (job.progress, job.output_keys, job.timings) == (100, ["outputs/x/0.png"], {"t": 1.0})
        assert job.expires_at - job.completed_at == timedelta(hours=2)


def test_progress_is_written_only_while_running(sessions):
    with sessions() as session:
        running = _job_in(session, JobStatus.IN_PROGRESS)
        assert jobs.record_progress(session, running, 40)
        assert jobs.record_progress(session, running, 250)  # clamped below 100 until completed
        session.expire_all()
        assert session.get(Job, running).progress == 99
        cancelled = _job_in(session, JobStatus.CANCELLED)
        assert not jobs.record_progress(session, cancelled, 50)


def test_visibility_is_owner_and_kind_scoped(sessions):
    with sessions() as session:
        job_id = _job_in(session, JobStatus.QUEUED)
        assert jobs.get_visible(session, job_id, owner="o", kinds=[JobKind.VIDEO]) is not None
        assert jobs.get_visible(session, job_id, owner="someone-else", kinds=[JobKind.VIDEO]) is None
        assert jobs.get_visible(session, job_id, owner="o", kinds=[JobKind.IMAGE_EDIT]) is None
        jobs.mark_deleted(session, job_id)
        assert jobs.get_visible(session, job_id, owner="o", kinds=[JobKind.VIDEO]) is None
