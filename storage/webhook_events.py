"""A job's webhook event, from the moment its job ends to its last delivery attempt: every change
of a `webhook_events` row, and every `webhook_deliveries` row, is written by this module, each
change as a compare-and-set.

State machine:

    (its job reaches a terminal state: `create`, in that transition's transaction)
                │
                ▼
            pending ──record_attempt: 2xx──────────────────────▶ delivered
              ▲  │  ──record_attempt: 410 Gone─────────────────▶ gone
              │  │  ──record_attempt: not retryable, or no time
              │  │    left in the retry window─────────────────▶ failed
              │  └──record_attempt with retry_at────┐
              └─────────────────────────────────────┘

delivered, gone and failed are terminal (`finished_at` is set). While pending, two leases keep
one event from being attempted twice at once:

- The dispatch lease (`dispatched_at`): the sweeper takes it with `lease_for_dispatch` before it
  hands the event to the webhook queue, gives it back with `release_dispatch` if that publish
  failed, and it lapses after DISPATCH_LEASE (the message was lost) so that the event is handed
  out again. A recorded retry clears it.
- The in-flight lease: `claim` moves `next_attempt_at` past the end of the longest attempt, so a
  duplicate message finds the event not due; it compares the attempt count it read, so of two
  copies of one message one wins. `record_attempt` compares that count again: only the claim that
  made an attempt may record it, together with the attempt's delivery row.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from storage.models import EventStatus, Job, WebhookDelivery, WebhookEvent

# A dispatched event not attempted by then is handed out again.
DISPATCH_LEASE = timedelta(minutes=5)

_PENDING = EventStatus.PENDING


def create(session: Session, *, job_id: str, event_type: str, url: str) -> None:
    """Add a job's terminal event to the session, pending and due at once; the caller (the job's
    transition, storage/jobs.py) commits it together with the job's new status."""
    created = datetime.now(UTC)
    session.add(
        WebhookEvent(
            id="evt_" + secrets.token_hex(12),
            job_id=job_id,
            type=event_type,
            url=url,
            status=_PENDING,
            attempts=0,
            created_at=created,
            next_attempt_at=created,
        )
    )


# --- The sweeper's dispatch lease ---------------------------------------------------------


def _dispatch_lease_ended(at: datetime) -> ColumnElement[bool]:
    return or_(WebhookEvent.dispatched_at.is_(None), WebhookEvent.dispatched_at < at - DISPATCH_LEASE)


def due_for_dispatch(session: Session, *, limit: int) -> list[str]:
    """The ids of pending events whose next attempt is due and that no sweeper has handed out
    (or whose lease lapsed), the longest due first."""
    at = datetime.now(UTC)
    return list(
        session.scalars(
            select(WebhookEvent.id)
            .where(WebhookEvent.status == _PENDING, WebhookEvent.next_attempt_at <= at, _dispatch_lease_ended(at))
            .order_by(WebhookEvent.next_attempt_at)
            .limit(limit)
        )
    )


def lease_for_dispatch(session: Session, event_id: str) -> bool:
    """Take the dispatch lease before handing the event to the webhook queue; False if another
    sweeper took it first."""
    at = datetime.now(UTC)
    leased = session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status == _PENDING, _dispatch_lease_ended(at))
        .values(dispatched_at=at)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return leased.rowcount == 1


def release_dispatch(session: Session, event_id: str) -> None:
    """Give the lease back: the event never reached the webhook queue, so the next tick hands it
    out again rather than after the lease lapses."""
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status == _PENDING)
        .values(dispatched_at=None)
        .execution_options(synchronize_session=False)
    )
    session.commit()


# --- One delivery attempt -----------------------------------------------------------------


def find_with_owner(session: Session, event_id: str) -> tuple[WebhookEvent, str] | None:
    """The event and the owner of its job (whose key decides the signing secret); None if there
    is no such event."""
    row = session.execute(
        select(WebhookEvent, Job.owner).join(Job, Job.id == WebhookEvent.job_id).where(WebhookEvent.id == event_id)
    ).first()
    return None if row is None else (row[0], row[1])


def claim(session: Session, event: WebhookEvent, *, in_flight_for: timedelta) -> bool:
    """Mark the event, as read, in flight for one attempt: it must still be pending, due, and at
    the attempt count read. False if it is not, or another copy of the message claimed it first."""
    started = datetime.now(UTC)
    due = or_(WebhookEvent.next_attempt_at.is_(None), WebhookEvent.next_attempt_at <= started)
    claimed = session.execute(
        update(WebhookEvent)
        .where(
            WebhookEvent.id == event.id,
            WebhookEvent.status == _PENDING,
            WebhookEvent.attempts == event.attempts,
            due,
        )
        .values(next_attempt_at=started + in_flight_for)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return claimed.rowcount == 1


def record_attempt(
    session: Session,
    event_id: str,
    *,
    attempt: int,
    status: EventStatus,
    retry_at: datetime | None = None,
    started_at: datetime,
    status_code: int | None,
    latency_ms: int | None,
    error: str | None,
) -> bool:
    """Record attempt number `attempt` (from 1) and move the event on: to a final `status`, or,
    with `status` pending, to its next attempt at `retry_at`, free for the sweeper to hand out
    again. False, and nothing written, if the event changed since the claim that made the attempt."""
    if (status == _PENDING) != (retry_at is not None):
        raise ValueError(f"an event goes on pending with a retry time, or ends; not {status} at {retry_at}")
    if status == _PENDING:
        values = {"next_attempt_at": retry_at, "dispatched_at": None}
    else:
        values = {"next_attempt_at": None, "finished_at": datetime.now(UTC)}
    recorded = session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id, WebhookEvent.status == _PENDING, WebhookEvent.attempts == attempt - 1)
        .values(status=status, attempts=attempt, **values)
        .execution_options(synchronize_session=False)
    ).rowcount
    if recorded == 1:
        session.add(
            WebhookDelivery(
                event_id=event_id,
                attempt=attempt,
                started_at=started_at,
                status_code=status_code,
                latency_ms=latency_ms,
                error=error,
            )
        )
    session.commit()
    return recorded == 1
