"""Webhook delivery: a job's terminal event POSTed to its URL, signed as Standard Webhooks, the
scheme the official openai SDK's `client.webhooks.unwrap` verifies.

The database drives retries, not the broker: a message means "make one attempt at this event
now". The sweeper hands out due events; `deliver` claims the event, POSTs once, and records the
outcome, and when another attempt is needed it schedules it (exponential backoff with jitter) so
the sweeper hands it out again when due. The event's states and their compare-and-set changes are
in storage/webhook_events.py.

- 2xx: delivered. 410 Gone: the receiver asked to hear no more, so no retry.
- Anything else (3xx, which is never followed; 4xx; 5xx; a timeout; a refused connection; a URL
  refused by the outbound check, since DNS can change back): retried until the next attempt
  would fall past `created_at + webhook_retry_window_s`, then failed.
- No signing secret for the job's key: failed at once; an unsigned delivery is never sent.

`webhook-id` is the event id, the same on every attempt, so a receiver drops a duplicate by id.
No database transaction is open while the HTTP request is in flight.

What is signed, and how, is in `worker/webhook_signing.py`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.orm import Session, sessionmaker

from darkroom.logs import log_context
from darkroom.outbound import (
    CheckedURL,
    UnsafeURL,
    check_url,
    safe_client,
    send_pinned,
)
from darkroom.settings import Settings
from storage import webhook_events
from storage.jobs import now
from storage.models import EventStatus
from worker.webhook_signing import event_body, signed_headers

log = logging.getLogger("darkroom.webhooks")

_MAX_ERROR_CHARS = 500


def retry_delay_s(
    failed_attempts: int, *, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with "equal jitter": half to all of min(max, base * 2^(n-1)). Keeping at
    least half the nominal delay gives a struggling receiver real rest; the random half spreads
    the retries of many events that failed together."""
    nominal = min(max_s, base_s * 2 ** min(failed_attempts - 1, 62))
    return nominal * (rng or random).uniform(0.5, 1.0)


# --- One attempt ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claimed:
    """An event this call may attempt: read, and marked in flight, in one short transaction."""

    id: str
    job_id: str
    type: str
    url: str
    created_at: datetime
    attempt: int  # the number of this attempt, from 1
    owner: str


@dataclass(frozen=True)
class _Attempt:
    started_at: datetime
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    retryable: bool = True


def _refused_unsigned(started_at: datetime) -> _Attempt:
    return _Attempt(
        started_at,
        error="No signing secret applies to this job's key (DARKROOM_WEBHOOK_SECRET, or the key's in "
        "DARKROOM_WEBHOOK_KEYS); an unsigned delivery is never sent.",
        retryable=False,
    )


def deliver(
    settings: Settings,
    sessions: sessionmaker[Session],
    event_id: str,
    *,
    tls_context: ssl.SSLContext | None = None,
) -> None:
    """Make one attempt at an event and record it; a message for an event that is not pending or
    not yet due (a duplicate, or one already in flight) does nothing."""
    with sessions() as session:
        claimed = _claim(session, event_id, in_flight_for=_in_flight_lease(settings))
    if claimed is None:
        return
    with log_context(job_id=claimed.job_id, event_id=claimed.id):
        secret = settings.signing_secret_for(claimed.owner)
        attempt = (
            _attempt(settings, claimed, secret, tls_context) if secret else _refused_unsigned(now())
        )
        with sessions() as session:
            _record(session, settings, claimed, attempt)


def _in_flight_lease(settings: Settings) -> timedelta:
    # Outlasts the longest attempt (its deadline, plus the DNS look-up before it), so a duplicate
    # message finds the event not due rather than POSTing it again.
    return timedelta(seconds=settings.webhook_timeout_s + 30)


def _claim(session: Session, event_id: str, *, in_flight_for: timedelta) -> _Claimed | None:
    found = webhook_events.find_with_owner(session, event_id)
    if found is None:
        log.warning("webhook event %s does not exist; message dropped", event_id)
        return None
    event, owner = found
    if not webhook_events.claim(session, event, in_flight_for=in_flight_for):
        log.info(
            "webhook %s not attempted: %s, next attempt at %s",
            event_id,
            event.status,
            event.next_attempt_at,
        )
        return None
    return _Claimed(
        event.id, event.job_id, event.type, event.url, event.created_at, event.attempts + 1, owner
    )


def _attempt(
    settings: Settings, claimed: _Claimed, secret: str, tls_context: ssl.SSLContext | None
) -> _Attempt:
    started_at = now()
    started = time.perf_counter()
    try:
        # Again at delivery: the host may resolve elsewhere than when the job was submitted.
        checked = check_url(
            claimed.url,
            allow_http=settings.webhook_allow_http,
            allowed_hosts=settings.webhook_allowed_hosts,
        )
    except UnsafeURL as error:
        return _Attempt(started_at=started_at, error=f"Refused before sending: {error}")
    body = event_body(claimed.id, claimed.type, claimed.created_at, claimed.job_id)
    headers = signed_headers(secret, claimed.id, body, timestamp=int(time.time()))
    try:
        status_code, location = asyncio.run(
            _post(checked, body, headers, settings.webhook_timeout_s, tls_context)
        )
    except (httpx.HTTPError, TimeoutError) as error:
        latency_ms = round((time.perf_counter() - started) * 1000)
        return _Attempt(
            started_at, latency_ms=latency_ms, error=_describe(error, settings.webhook_timeout_s)
        )
    latency_ms = round((time.perf_counter() - started) * 1000)
    error = None
    if 300 <= status_code < 400:
        error = f"Redirect to {location!r} not followed: a webhook URL must answer itself."
    return _Attempt(started_at, status_code=status_code, latency_ms=latency_ms, error=error)


async def _post(
    checked: CheckedURL,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    tls_context: ssl.SSLContext | None,
) -> tuple[int, str | None]:
    """The status and redirect target; the body is never read. One deadline over the whole
    attempt (connect, TLS, sending, the response's headers): a receiver that drips its answer a
    byte at a time is cut off there. A new client per attempt: a pooled connection verified for
    one host must not carry a request for another at the same address."""
    async with (
        asyncio.timeout(timeout_s),
        safe_client(tls_context=tls_context) as client,
        send_pinned(client, "POST", checked, headers=headers, content=body) as response,
    ):
        return response.status_code, response.headers.get("location")


def _describe(error: httpx.HTTPError | TimeoutError, timeout_s: float) -> str:
    if isinstance(error, TimeoutError):
        return f"Timed out after {timeout_s:g} s, the limit for connecting, sending the event and the answer's headers."
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def _next_state(
    settings: Settings, claimed: _Claimed, attempt: _Attempt
) -> tuple[EventStatus, datetime | None]:
    """The event's status after this attempt, and when pending, the time of its next attempt."""
    code = attempt.status_code
    if code is not None and 200 <= code < 300:
        return EventStatus.DELIVERED, None
    if code == 410:
        return EventStatus.GONE, None
    delay = retry_delay_s(
        claimed.attempt,
        base_s=settings.webhook_backoff_base_s,
        max_s=settings.webhook_backoff_max_s,
    )
    window_ends = claimed.created_at + timedelta(seconds=settings.webhook_retry_window_s)
    retry_at = now() + timedelta(seconds=delay)
    if not attempt.retryable or retry_at > window_ends:
        return EventStatus.FAILED, None
    return EventStatus.PENDING, retry_at


def _record(session: Session, settings: Settings, claimed: _Claimed, attempt: _Attempt) -> None:
    status, retry_at = _next_state(settings, claimed, attempt)
    recorded = webhook_events.record_attempt(
        session,
        claimed.id,
        attempt=claimed.attempt,
        status=status,
        retry_at=retry_at,
        started_at=attempt.started_at,
        status_code=attempt.status_code,
        latency_ms=attempt.latency_ms,
        error=attempt.error,
    )
    outcome = f"{attempt.status_code or ''} {attempt.error or ''}".strip()
    if not recorded:
        after = "not recorded: the event changed meanwhile"
    elif retry_at is not None:
        after = f"retry at {retry_at:%H:%M:%S.%f}"
    else:
        after = str(status)
    log.info(
        "webhook %s (%s) attempt %d: %s -> %s",
        claimed.id,
        claimed.type,
        claimed.attempt,
        outcome,
        after,
    )
