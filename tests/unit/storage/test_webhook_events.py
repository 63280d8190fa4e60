"""The webhook event state machine: created pending with its job's end, handed out once per
dispatch lease, claimed by one copy of a message, and moved on only by the claim that made the
attempt (on SQLite and Postgres: tests/unit/storage/conftest.py). The Postgres database is shared
by the session's tests, so each test looks only at its own events."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from storage import jobs, webhook_events
from storage.models import EventStatus, Job, JobKind, JobStatus, WebhookDelivery, WebhookEvent

URL = "https://example.com/hook"
IN_FLIGHT = timedelta(minutes=2)


def _event(session, owner: str = "o") -> str:
    """A failed video job with a webhook URL: its event, as the job's transition wrote it."""
    job_id = jobs.new_job_id(JobKind.VIDEO)
    jobs.create(session, job_id=job_id, kind=JobKind.VIDEO, model="tiny-wan", owner=owner, params={}, webhook_url=URL)
    session.commit()
    assert jobs.fail(session, job_id, code="x", message="y")
    return session.scalars(select(WebhookEvent.id).where(WebhookEvent.job_id == job_id)).one()


def _set(session, event_id: str, **values) -> None:
    session.execute(update(WebhookEvent).where(WebhookEvent.id == event_id).values(**values))
    session.commit()


def _due(session, *mine: str) -> list[str]:
    """Which of these events are due for dispatch, in the order they are handed out."""
    return [event_id for event_id in webhook_events.due_for_dispatch(session, limit=10_000) if event_id in mine]


def _row(session, event_id: str) -> WebhookEvent:
    session.expire_all()
    return session.get(WebhookEvent, event_id)


def _record(session, event_id: str, attempt: int, status: EventStatus, retry_at=None) -> bool:
    return webhook_events.record_attempt(
        session,
        event_id,
        attempt=attempt,
        status=status,
        retry_at=retry_at,
        started_at=jobs.now(),
        status_code=500,
        latency_ms=12,
        error=None,
    )


def test_a_new_event_is_pending_and_due_at_once(sessions):
    with sessions() as session:
        job_id = jobs.new_job_id(JobKind.IMAGE_GENERATION)
        jobs.create(session, job_id=job_id, kind=JobKind.IMAGE_GENERATION, model="m", owner="o", params={})
        webhook_events.create(session, job_id=job_id, event_type="image.completed", url=URL)
        session.commit()
        event = session.scalars(select(WebhookEvent).where(WebhookEvent.job_id == job_id)).one()
        assert (event.type, event.url, event.status, event.attempts) == ("image.completed", URL, "pending", 0)
        assert event.id.startswith("evt_") and event.next_attempt_at == event.created_at
        assert (event.dispatched_at, event.finished_at) == (None, None)
        assert _due(session, event.id) == [event.id]


def test_a_due_event_is_leased_once_and_handed_out_again_when_released_or_lapsed(sessions):
    with sessions() as session:
        event_id = _event(session)
        assert webhook_events.lease_for_dispatch(session, event_id)
        assert not webhook_events.lease_for_dispatch(session, event_id)  # another sweeper's turn
        assert _due(session, event_id) == []

        webhook_events.release_dispatch(session, event_id)  # its publish failed
        assert _row(session, event_id).dispatched_at is None
        assert _due(session, event_id) == [event_id]

        assert webhook_events.lease_for_dispatch(session, event_id)
        lapsed = jobs.now() - webhook_events.DISPATCH_LEASE - timedelta(seconds=1)
        _set(session, event_id, dispatched_at=lapsed)  # its message was lost
        assert _due(session, event_id) == [event_id]
        assert webhook_events.lease_for_dispatch(session, event_id)


def test_events_not_due_or_finished_are_not_handed_out(sessions):
    with sessions() as session:
        later, finished = _event(session), _event(session)
        _set(session, later, next_attempt_at=jobs.now() + timedelta(minutes=1))
        _set(session, finished, status=EventStatus.DELIVERED, next_attempt_at=None)
        assert _due(session, later, finished) == []
        assert not webhook_events.lease_for_dispatch(session, finished)


def test_due_events_come_the_longest_due_first_up_to_the_limit(sessions):
    with sessions() as session:
        newer, older = _event(session), _event(session)
        # Due before any other test's event, so that they come first even on a shared database.
        _set(session, newer, next_attempt_at=jobs.now() - timedelta(days=999))
        _set(session, older, next_attempt_at=jobs.now() - timedelta(days=1000))
        assert webhook_events.due_for_dispatch(session, limit=2) == [older, newer]
        assert webhook_events.due_for_dispatch(session, limit=1) == [older]


def test_an_event_is_found_with_the_owner_of_its_job(sessions):
    with sessions() as session:
        event_id = _event(session, owner="key_abc")
        event, owner = webhook_events.find_with_owner(session, event_id)
        assert (event.id, owner) == (event_id, "key_abc")
        assert webhook_events.find_with_owner(session, "evt_missing") is None


def test_of_two_claims_on_one_read_only_one_wins(sessions):
    with sessions() as session:
        event_id = _event(session)
        event, _ = webhook_events.find_with_owner(session, event_id)
        before = jobs.now()
        assert webhook_events.claim(session, event, in_flight_for=IN_FLIGHT)
        assert _row(session, event_id).next_attempt_at >= before + IN_FLIGHT  # not due while in flight
        assert not webhook_events.claim(session, event, in_flight_for=IN_FLIGHT)

        _set(session, event_id, next_attempt_at=jobs.now())  # due again, but an attempt was recorded
        assert _record(session, event_id, 1, EventStatus.PENDING, retry_at=jobs.now())
        assert not webhook_events.claim(session, event, in_flight_for=IN_FLIGHT)  # read at 0 attempts


@pytest.mark.parametrize("status", [EventStatus.DELIVERED, EventStatus.GONE, EventStatus.FAILED])
def test_a_final_attempt_ends_the_event_and_is_recorded(sessions, status):
    with sessions() as session:
        event_id = _event(session)
        assert _record(session, event_id, 1, status)
        event = _row(session, event_id)
        assert (event.status, event.attempts, event.next_attempt_at) == (status, 1, None)
        assert event.finished_at is not None
        delivery = session.scalars(select(WebhookDelivery).where(WebhookDelivery.event_id == event_id)).one()
        assert (delivery.attempt, delivery.status_code, delivery.latency_ms, delivery.error) == (1, 500, 12, None)


def test_a_retry_schedules_the_next_attempt_and_frees_the_event_for_the_sweeper(sessions):
    with sessions() as session:
        event_id = _event(session)
        assert webhook_events.lease_for_dispatch(session, event_id)
        retry_at = jobs.now() + timedelta(seconds=30)
        assert _record(session, event_id, 1, EventStatus.PENDING, retry_at=retry_at)
        event = _row(session, event_id)
        assert (event.status, event.attempts, event.next_attempt_at) == ("pending", 1, retry_at)
        assert (event.dispatched_at, event.finished_at) == (None, None)


def test_only_the_claim_that_made_an_attempt_records_it(sessions):
    with sessions() as session:
        event_id = _event(session)
        assert _record(session, event_id, 1, EventStatus.PENDING, retry_at=jobs.now())
        assert not _record(session, event_id, 1, EventStatus.DELIVERED)  # attempt 1 is on record
        assert not _record(session, event_id, 3, EventStatus.DELIVERED)  # attempt 2 never was
        assert _record(session, event_id, 2, EventStatus.DELIVERED)
        assert not _record(session, event_id, 3, EventStatus.FAILED)  # finished
        attempts = session.scalars(select(WebhookDelivery.attempt).where(WebhookDelivery.event_id == event_id))
        assert (list(attempts), _row(session, event_id).status) == ([1, 2], "delivered")


def test_a_pending_outcome_needs_a_retry_time_and_only_it_has_one(sessions):
    with sessions() as session:
        event_id = _event(session)
        with pytest.raises(ValueError, match="retry time"):
            _record(session, event_id, 1, EventStatus.PENDING)
        with pytest.raises(ValueError, match="retry time"):
            _record(session, event_id, 1, EventStatus.DELIVERED, retry_at=jobs.now())
        assert _row(session, event_id).attempts == 0


def test_a_job_without_a_webhook_url_writes_no_event(sessions):
    with sessions() as session:
        job_id = jobs.new_job_id(JobKind.VIDEO)
        jobs.create(session, job_id=job_id, kind=JobKind.VIDEO, model="tiny-wan", owner="o", params={})
        session.commit()
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.IN_PROGRESS))
        session.commit()
        assert jobs.cancel(session, job_id)
        assert session.scalars(select(WebhookEvent).where(WebhookEvent.job_id == job_id)).all() == []
