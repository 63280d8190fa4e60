"""`/v1/videos/{id}/events` and `/v1/images/{id}/events`: a job's webhook events and the record
of every delivery attempt, so an integrator can see what was sent, when, and what came back."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import OwnerDep, SessionDep, get_owned_job
from api.routes.images import IMAGE_KINDS
from api.routes.videos import VIDEO_KINDS
from storage.models import JobKind, WebhookDelivery, WebhookEvent

router = APIRouter(tags=["events"])


class DeliveryAttempt(BaseModel):
    attempt: int
    started_at: int
    status_code: int | None  # None when no response came (timeout, refused connection, refused URL)
    latency_ms: int | None
    error: str | None


class EventDelivery(BaseModel):
    url: str
    status: Literal["pending", "delivered", "gone", "failed"]
    attempts: int
    next_attempt_at: int | None
    finished_at: int | None
    history: list[DeliveryAttempt]


class EventData(BaseModel):
    id: str  # the job's id


class JobEvent(BaseModel):
    """The event as its webhook carries it, plus how its delivery is going."""

    id: str
    object: Literal["event"] = "event"
    type: str
    created_at: int
    data: EventData
    delivery: EventDelivery


class JobEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobEvent]


@router.get("/v1/videos/{video_id}/events", response_model=JobEventList)
def list_video_events(video_id: str, session: SessionDep, owner: OwnerDep) -> JobEventList:
    return _events_of(session, video_id, owner, VIDEO_KINDS, "video")


@router.get("/v1/images/{image_id}/events", response_model=JobEventList)
def list_image_events(image_id: str, session: SessionDep, owner: OwnerDep) -> JobEventList:
    return _events_of(session, image_id, owner, IMAGE_KINDS, "image")


def _events_of(
    session: Session, job_id: str, owner: str, kinds: tuple[JobKind, ...], what: str
) -> JobEventList:
    job = get_owned_job(session, job_id, owner, kinds, what)
    events = list(
        session.scalars(
            select(WebhookEvent)
            .where(WebhookEvent.job_id == job.id)
            .order_by(WebhookEvent.created_at, WebhookEvent.id)
        )
    )
    history: dict[str, list[DeliveryAttempt]] = defaultdict(list)
    if events:
        deliveries = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.event_id.in_([event.id for event in events]))
            .order_by(WebhookDelivery.attempt, WebhookDelivery.id)
        )
        for delivery in deliveries:
            history[delivery.event_id].append(
                DeliveryAttempt(
                    attempt=delivery.attempt,
                    started_at=_unix(delivery.started_at),
                    status_code=delivery.status_code,
                    latency_ms=delivery.latency_ms,
                    error=delivery.error,
                )
            )
    return JobEventList(data=[_job_event(event, history[event.id]) for event in events])


def _job_event(event: WebhookEvent, history: list[DeliveryAttempt]) -> JobEvent:
    return JobEvent(
        id=event.id,
        type=event.type,
        created_at=_unix(event.created_at),
        data=EventData(id=event.job_id),
        delivery=EventDelivery(
            url=event.url,
            status=event.status,
            attempts=event.attempts,
            next_attempt_at=_unix(event.next_attempt_at) if event.next_attempt_at else None,
            finished_at=_unix(event.finished_at) if event.finished_at else None,
            history=history,
        ),
    )


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())
