"""SQLAlchemy models. The schema itself is created by the Alembic migrations in `migrations/`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone; this restores it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use datetime.now(UTC)")
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class JobKind(StrEnum):
    VIDEO = "video"
    IMAGE_GENERATION = "image.generation"
    IMAGE_EDIT = "image.edit"


class JobStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    # Set when a queued or running job is deleted; the worker stops at its next progress write.
    CANCELLED = "cancelled"


class Job(Base):
    """One generation request. Its state machine lives in `storage.jobs`."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    # The validated request: prompt, size, seconds, n, seed, steps... (what the worker runs).
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    output_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The previews a streamed image job has stored so far, in order (`partial_images`); written
    # by the running attempt, emptied when another attempt claims the job.
    partial_keys: Mapped[list[str]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    # What the worker learned making the outputs: fps, frame count, content type...
    output_meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When its id was last handed to the broker; NULL when that failed and the sweeper must.
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The running attempt's last sign of life; a stale one means its worker vanished.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Where its terminal event is POSTed: the request's own URL or its key's default endpoint.
    webhook_url: Mapped[str | None] = mapped_column(Text)
    # When the retention pass deleted its blobs; `/content` then answers 404 `content_expired`.
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The video this job remixed (`POST /v1/videos/{id}/remix`). No foreign key: job rows are
    # only soft-deleted, and a constraint would only make purging old rows order-dependent.
    remixed_from_video_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'in_progress', 'completed', 'failed', 'cancelled')",
            name="ck_jobs_status",
        ),
        CheckConstraint("progress BETWEEN 0 AND 100", name="ck_jobs_progress"),
        Index("ix_jobs_owner_kind_created", "owner", "kind", "created_at", "id"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_owner_status", "owner", "status"),
        Index("ix_jobs_expiry", "expired_at", "expires_at"),
    )


class IdempotencyKey(Base):
    """An `Idempotency-Key` a caller sent with a POST, and the job that request created."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class EventStatus(StrEnum):
    PENDING = "pending"  # not yet delivered; retried until its window ends
    DELIVERED = "delivered"  # the receiver answered 2xx
    GONE = "gone"  # the receiver answered 410 Gone: never retried
    FAILED = "failed"  # the retry window ended without a 2xx


class WebhookEvent(Base):
    """A job's terminal event, written in the same transaction as the status change that caused
    it, then delivered (signed, retried) by the webhook worker. Its id is the `webhook-id`. Its
    state machine lives in `storage.webhook_events`."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id"), index=True)
    type: Mapped[str] = mapped_column(String(40))  # video.completed, image.failed, ...
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set when the sweeper hands it to the webhook queue; a lease against handing it twice.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'delivered', 'gone', 'failed')", name="ck_webhook_events_status"
        ),
        Index("ix_webhook_events_due", "status", "next_attempt_at"),
    )


class WebhookDelivery(Base):
    """One HTTP attempt at delivering an event: what came back and how long it took."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(40), ForeignKey("webhook_events.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class Worker(Base):
    """One worker process as it last described itself. Written by its own heartbeat thread every
    `heartbeat_interval_s`, read by `/health/workers` and `/metrics`; a row whose heartbeat is
    older than a few intervals belongs to a worker that is gone."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid
    role: Mapped[str] = mapped_column(String(32))  # generation | webhooks | sweeper
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    devices: Mapped[list[str]] = mapped_column(JSON, default=list)
    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    queues: Mapped[list[str]] = mapped_column(JSON, default=list)
    heartbeat_interval_s: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    current_job_id: Mapped[str | None] = mapped_column(String(64))
    jobs_completed: Mapped[int] = mapped_column(Integer, default=0)
    jobs_failed: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Per device: bytes in use and peak since start (torch's allocator on a GPU, RSS on the CPU).
    memory: Mapped[dict[str, dict[str, int]]] = mapped_column(JSON, default=dict)
    # Cumulative duration histograms of the jobs this process ran: see `darkroom.telemetry`.
    histograms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class FilePurpose(StrEnum):
    BATCH = "batch"  # a batch's JSONL request lines
    VISION = "vision"  # an image, checked as an upload is, referenced later by `file_id`
    USER_DATA = "user_data"  # any bytes; checked as an image when referenced as one
    # Written by Darkroom only (a batch's output and error files), never accepted from a client.
    BATCH_OUTPUT = "batch_output"


class StoredFile(Base):
    """A file of the Files API: its bytes in the blob store (`storage.files.blob_key`), this row
    saying whose they are, what for and until when. Every change goes through `storage.files`;
    the row is only ever marked deleted."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # file-<24 hex>
    owner: Mapped[str] = mapped_column(String(64))  # the key's fingerprint, as on jobs
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(100))
    # Lines of a `batch` file, counted as it was uploaded; NULL for other purposes.
    line_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # NULL: kept until deleted. Past it, the file is gone for every caller; the sweeper then
    # deletes its blob and sets `deleted_at`.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_files_owner_created", "owner", "created_at", "id"),
        Index("ix_files_expiry", "deleted_at", "expires_at"),
    )
