"""The job state machine: every allowed transition takes effect, every other one is refused; and
the writes that leave the status alone take effect only in the state they are meant for. On SQLite
and on the machine's real Postgres (schema built by the migrations)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from storage import jobs
from storage.models import Job, JobKind, JobStatus, WebhookEvent


def _job_in(session, status: JobStatus, webhook_url: str | None = None) -> str:
    job_id = jobs.new_job_id(JobKind.VIDEO)
    jobs.create(
        session, job_id=job_id, kind=JobKind.VIDEO, model="tiny-wan", owner="o", params={}, webhook_url=webhook_url
    )
    session.commit()
    session.execute(update(Job).where(Job.id == job_id).values(status=status))
    session.commit()
    return job_id


def _apply(session, job_id: str, target: JobStatus) -> bool:
    if target == JobStatus.QUEUED:
        return jobs.requeue(session, job_id, attempt=0)
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
    (JobStatus.IN_PROGRESS, JobStatus.QUEUED),
}
TARGETS = list(JobStatus)


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


def test_heartbeat_writes_progress_only_while_the_attempt_owns_the_job(sessions):
    with sessions() as session:
        running = _job_in(session, JobStatus.QUEUED)
        attempt = jobs.claim(session, running, "w1").attempts
        assert jobs.heartbeat(session, running, attempt=attempt, progress=40)
        assert jobs.heartbeat(session, running, attempt=attempt, progress=250)  # below 100 until completed
        session.expire_all()
        assert session.get(Job, running).progress == 99
        assert jobs.is_running(session, running, attempt=attempt)
        assert not jobs.heartbeat(session, running, attempt=attempt + 1, progress=50)
        cancelled = _job_in(session, JobStatus.CANCELLED)
        assert not jobs.heartbeat(session, cancelled, attempt=0, progress=50)
        assert not jobs.is_running(session, cancelled, attempt=0)


def test_an_attempt_presumed_lost_cannot_finish_the_job_its_successor_runs(sessions):
    with sessions() as session:
        job_id = _job_in(session, JobStatus.QUEUED)
        first = jobs.claim(session, job_id, "w1").attempts
        assert jobs.requeue(session, job_id, attempt=first)
        second = jobs.claim(session, job_id, "w2").attempts
        assert second == first + 1
        assert not jobs.is_running(session, job_id, attempt=first)
        assert not jobs.complete(
            session, job_id, attempt=first, output_keys=[], output_meta={}, timings={}, retention=timedelta(days=1)
        )
        assert not jobs.fail(session, job_id, code="x", message="y", attempt=first)
        assert not jobs.requeue(session, job_id, attempt=first)
        assert jobs.complete(
            session, job_id, attempt=second, output_keys=["k"], output_meta={}, timings={}, retention=timedelta(days=1)
        )
        session.expire_all()
        assert (session.get(Job, job_id).status, session.get(Job, job_id).worker) == ("completed", "w2")


@pytest.mark.parametrize("target", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_terminal_state_writes_its_webhook_event_with_the_change(sessions, target):
    with sessions() as session:
        with_hook = _job_in(session, JobStatus.IN_PROGRESS, webhook_url="https://example.com/hook")
        without = _job_in(session, JobStatus.IN_PROGRESS)
        for job_id in (with_hook, without):
            assert _apply(session, job_id, target)
        events = session.scalars(select(WebhookEvent).where(WebhookEvent.job_id.in_([with_hook, without]))).all()
        assert [(e.job_id, e.type, e.url, e.status) for e in events] == [
            (with_hook, f"video.{target}", "https://example.com/hook", "pending")
        ]
        assert events[0].id.startswith("evt_") and events[0].next_attempt_at is not None


def test_visibility_is_owner_and_kind_scoped(sessions):
    with sessions() as session:
        job_id = _job_in(session, JobStatus.QUEUED)
        assert jobs.get_visible(session, job_id, owner="o", kinds=[JobKind.VIDEO]) is not None
        assert jobs.get_visible(session, job_id, owner="someone-else", kinds=[JobKind.VIDEO]) is None
        assert jobs.get_visible(session, job_id, owner="o", kinds=[JobKind.IMAGE_EDIT]) is None
        jobs.mark_deleted(session, job_id)
        assert jobs.get_visible(session, job_id, owner="o", kinds=[JobKind.VIDEO]) is None


def _fresh(session, job_id: str) -> Job:
    session.expire_all()
    return session.get(Job, job_id)


def test_publishing_is_recorded_only_while_the_job_is_queued(sessions):
    with sessions() as session:
        queued = _job_in(session, JobStatus.QUEUED)
        jobs.mark_unpublished(session, queued)
        assert _fresh(session, queued).published_at is None
        assert jobs.mark_published(session, queued)
        assert _fresh(session, queued).published_at is not None
        running = _job_in(session, JobStatus.IN_PROGRESS)
        assert not jobs.mark_published(session, running)


def test_a_job_is_marked_expired_once_and_unmarked_when_its_blobs_stay(sessions):
    with sessions() as session:
        job_id = _job_in(session, JobStatus.COMPLETED)
        assert jobs.mark_expired(session, job_id)
        assert not jobs.mark_expired(session, job_id)  # another sweeper got there first
        jobs.unmark_expired(session, job_id)
        assert _fresh(session, job_id).expired_at is None
        assert jobs.mark_expired(session, job_id)
        assert _fresh(session, job_id).expired_at is not None
