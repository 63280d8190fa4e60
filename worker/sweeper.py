"""`darkroom sweeper`: the loop that makes "no accepted job is lost" hold when parts fail.

Postgres is the truth and the broker only a doorbell, so every tick the sweeper rings the bell
again wherever the truth says a ring went missing:

- a queued job whose publish failed (the broker was down when it was accepted) is published;
- a running job whose heartbeat stopped (its worker was killed, ran out of memory, lost its host)
  is requeued and published, or failed after `max_attempts` starts, so a job that kills its
  worker cannot loop forever;
- a queued job published long ago while its model's queue is empty lost its message (a broker
  restart without persistence) and is published again;
- a webhook event that is due is handed to the webhook queue;
- a completed job past its retention has its blobs deleted (`worker/retention.py`), and rows of
  workers silent for `worker_forget_after_s` are dropped.

Every change is a compare-and-set, and a duplicate message is skipped by the worker's claim, so
running two sweepers is safe; one is enough.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, fields
from datetime import timedelta

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from darkroom.settings import Settings
from storage import jobs, workers
from storage.blobs import BlobStore
from storage.models import EventStatus, Job, JobStatus, WebhookEvent
from worker.celery_app import publish_generate, publish_webhook, queue_for, queue_length
from worker.presence import Presence
from worker.retention import delete_blobs, expire_results

log = logging.getLogger("darkroom.sweeper")

BATCH = 500  # rows looked at per kind of repair per tick
WEBHOOK_LEASE = timedelta(minutes=5)  # a dispatched event not attempted by then is handed out again


@dataclass
class Sweep:
    published: int = 0  # never-published jobs now published
    requeued: int = 0  # running jobs whose worker vanished, requeued
    failed: int = 0  # ... and those that reached max_attempts, failed
    republished: int = 0  # queued jobs whose message was lost, published again
    webhooks: int = 0  # due webhook events handed to the webhook queue
    expired: int = 0  # completed jobs past their retention whose blobs were deleted

    def __bool__(self) -> bool:
        return any(getattr(self, field.name) for field in fields(self))


class Sweeper:
    def __init__(
        self, settings: Settings, sessions: sessionmaker[Session], celery: Celery, blobs: BlobStore
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.celery = celery
        self.blobs = blobs

    def run(self, stop: threading.Event) -> None:
        log.info("sweeper running every %g s", self.settings.sweep_interval_s)
        presence = Presence(self.settings, self.sessions, role="sweeper").start()
        try:
            self._sweep_until(stop)
        finally:
            presence.stop()

    def _sweep_until(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sweep = self.sweep()
                if sweep:
                    log.info("sweep: %s", sweep)
            except (SQLAlchemyError, BrokerError, OSError) as error:
                log.warning("sweep skipped: %s", error)
            except Exception:
                # The one process that repairs the others must outlive any single bad tick.
                log.exception("sweep failed; trying again next tick")
            stop.wait(self.settings.sweep_interval_s)

    def sweep(self) -> Sweep:
        sweep = Sweep()
        with self.sessions() as session:
            sweep.published = self._publish_unpublished(session)
            sweep.requeued, sweep.failed = self._recover_lost_runs(session)
            sweep.republished = self._republish_lost_messages(session)
            sweep.webhooks = self._dispatch_due_webhooks(session)
            sweep.expired = expire_results(session, self.blobs, batch=BATCH)
            workers.forget_older_than(session, timedelta(seconds=self.settings.worker_forget_after_s))
        return sweep

    def _publish(self, session: Session, job_id: str, model: str) -> None:
        publish_generate(self.celery, job_id, model)
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(published_at=jobs.now())
            .execution_options(synchronize_session=False)
        )
        session.commit()

    def _publish_unpublished(self, session: Session) -> int:
        rows = session.execute(
            select(Job.id, Job.model)
            .where(Job.status == JobStatus.QUEUED, Job.published_at.is_(None))
            .order_by(Job.created_at)
            .limit(BATCH)
        ).all()
        for job_id, model in rows:
            self._publish(session, job_id, model)
        return len(rows)

    def _recover_lost_runs(self, session: Session) -> tuple[int, int]:
        silent_since = jobs.now() - timedelta(seconds=self.settings.worker_lost_after_s)
        rows = session.execute(
            select(Job.id, Job.model, Job.attempts, Job.worker)
            .where(Job.status == JobStatus.IN_PROGRESS, Job.heartbeat_at < silent_since)
            .limit(BATCH)
        ).all()
        requeued = failed = 0
        for job_id, model, attempts, worker in rows:
            if attempts >= self.settings.max_attempts:
                if jobs.fail(
                    session,
                    job_id,
                    code="worker_lost",
                    message=(
                        f"The worker running this job stopped responding on each of its {attempts} "
                        "attempts (it may run out of memory on this request); giving up."
                    ),
                    attempt=attempts,
                ):
                    log.error("job %s lost its worker %s on attempt %d; failed", job_id, worker, attempts)
                    if not self.settings.keep_inputs:
                        delete_blobs(self.blobs, f"inputs/{job_id}")
                    failed += 1
            elif jobs.requeue(session, job_id, attempt=attempts):
                log.warning("job %s lost its worker %s on attempt %d; requeued", job_id, worker, attempts)
                self._publish(session, job_id, model)
                requeued += 1
        return requeued, failed

    def _republish_lost_messages(self, session: Session) -> int:
        published_before = jobs.now() - timedelta(seconds=self.settings.republish_after_s)
        rows = session.execute(
            select(Job.id, Job.model)
            .where(Job.status == JobStatus.QUEUED, Job.published_at < published_before)
            .order_by(Job.created_at)
            .limit(BATCH)
        ).all()
        # A message still in its queue is only waiting its turn; an empty queue means it is gone.
        empty = {model for model in {model for _, model in rows} if queue_length(self.celery, queue_for(model)) == 0}
        republished = 0
        for job_id, model in rows:
            if model in empty:
                log.warning("job %s was published but its queue is empty; publishing it again", job_id)
                self._publish(session, job_id, model)
                republished += 1
        return republished

    def _dispatch_due_webhooks(self, session: Session) -> int:
        now = jobs.now()
        lease_ended = or_(WebhookEvent.dispatched_at.is_(None), WebhookEvent.dispatched_at < now - WEBHOOK_LEASE)
        due = session.scalars(
            select(WebhookEvent.id)
            .where(WebhookEvent.status == EventStatus.PENDING, WebhookEvent.next_attempt_at <= now, lease_ended)
            .order_by(WebhookEvent.next_attempt_at)
            .limit(BATCH)
        ).all()
        dispatched = 0
        for event_id in due:
            leased = session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == event_id, WebhookEvent.status == EventStatus.PENDING, lease_ended)
                .values(dispatched_at=now)
                .execution_options(synchronize_session=False)
            )
            session.commit()
            if leased.rowcount != 1:
                continue  # another sweeper took it
            try:
                publish_webhook(self.celery, event_id)
            except BrokerError:
                self._release(session, event_id)
                raise
            dispatched += 1
        return dispatched

    def _release(self, session: Session, event_id: str) -> None:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id)
            .values(dispatched_at=None)
            .execution_options(synchronize_session=False)
        )
        session.commit()


def make_sweeper(settings: Settings) -> Sweeper:
    from storage.blobs import make_blob_store
    from storage.db import make_engine, make_session_factory
    from worker.celery_app import make_celery

    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    return Sweeper(settings, sessions, make_celery(settings), make_blob_store(settings))


def run_sweeper(settings: Settings) -> None:
    """`darkroom sweeper`: sweep until SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    make_sweeper(settings).run(stop)
