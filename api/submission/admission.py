"""The queue caps: past them new work is refused, with a Retry-After the SDK honours by itself."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.errors import APIError
from darkroom.settings import Settings
from storage import jobs


# The longest Retry-After the openai SDK honours; past it the SDK ignores the header.
MAX_RETRY_AFTER_S = 120


def admit(settings: Settings, session: Session, owner: str) -> None:
    # One figure for the message and the header, so a client reading either waits as long.
    retry_after_s = min(MAX_RETRY_AFTER_S, settings.admission_retry_after_s)
    for count, cap, whose in (
        (jobs.queued_count(session, owner=owner), settings.max_queued_jobs_per_key, "This key has"),
        (jobs.queued_count(session), settings.max_queued_jobs, "The server has"),
    ):
        if count >= cap:
            raise APIError(
                429,
                f"{whose} {count} jobs waiting to run, the most allowed. Retry after {retry_after_s} s.",
                code="too_many_queued_jobs",
                type="requests",
                headers={"Retry-After": str(retry_after_s)},
            )
