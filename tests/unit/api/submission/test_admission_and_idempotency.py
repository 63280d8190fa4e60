"""Refusals at submission that a client acts on: the queue caps' 429 (the wait it names), and an
`Idempotency-Key` whose job is gone."""

from __future__ import annotations

import pytest

from api.errors import APIError
from api.submission.admission import admit
from api.submission.idempotency import replay
from darkroom.settings import Settings
from storage import idempotency, jobs
from storage.models import JobKind


@pytest.mark.parametrize("retry_after_s,told", [(30, 30), (500, 120)])
def test_a_429_says_the_same_wait_in_its_message_and_its_retry_after(sessions, retry_after_s, told):
    settings = Settings(max_queued_jobs_per_key=0, admission_retry_after_s=retry_after_s)
    with sessions() as session, pytest.raises(APIError) as refused:
        admit(settings, session, "owner-a")
    assert (refused.value.status, refused.value.code) == (429, "too_many_queued_jobs")
    assert refused.value.headers["Retry-After"] == str(told)
    assert refused.value.message.endswith(f"Retry after {told} s.")


def _job_with_key(session, key: str) -> str:
    job_id = jobs.new_job_id(JobKind.VIDEO)
    job = jobs.create(session, job_id=job_id, kind=JobKind.VIDEO, model="tiny-wan", owner="owner-a", params={})
    session.flush()
    idempotency.remember(session, "owner-a", key, request_hash="same", job_id=job_id, created_at=job.created_at)
    session.commit()
    return job_id


def test_a_key_answers_with_its_job_until_the_job_is_deleted_then_is_spent(sessions):
    settings = Settings()
    with sessions() as session:
        job_id = _job_with_key(session, "order-1")
        assert replay(settings, session, "owner-a", "order-1", "same").id == job_id
        jobs.mark_deleted(session, job_id)
        session.commit()
        with pytest.raises(APIError) as spent:
            replay(settings, session, "owner-a", "order-1", "same")
    assert (spent.value.status, spent.value.code) == (409, "idempotency_key_job_deleted")
    assert job_id in spent.value.message and "deleted" in spent.value.message
    assert spent.value.headers["x-should-retry"] == "false"  # the SDK would otherwise retry a 409
