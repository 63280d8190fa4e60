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
- a completed job past its retention has its blobs deleted, and so has a file past its expiry
  (`worker/retention.py`); rows of workers silent for `worker_forget_after_s` are dropped.

What to repair is looked up by the named queries of storage/overdue.py and
storage/webhook_events.py; every change is a compare-and-set there or in storage/jobs.py, and a
duplicate message is skipped by the worker's claim, so running two sweepers is safe; one is enough.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, fields
from datetime import timedelta

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from darkroom.settings import Settings
from storage import jobs, overdue, webhook_events, workers
from storage.blobs import BlobStore
from worker.celery_app import publish_generate, publish_webhook, queue_for, queue_length
from worker.presence import Presence
from worker.retention import attempt_prefixes, delete_blobs, delete_expired_files, expire_results

log = logging.getLogger("darkroom.sweeper")

BATCH = 500  # rows looked at per kind of repair per tick


@dataclass
class Sweep:
    published: int = 0  # never-published jobs now published
    requeued: int = 0  # running jobs whose worker vanished, requeued
    failed: int = 0  # ... and those that reached max_attempts, failed
    republished: int = 0  # queued jobs whose message was lost, published again
    webhooks: int = 0  # due webhook events handed to the webhook queue
    expired: int = 0  # completed jobs past their retention whose blobs were deleted
    files_deleted: int = 0  # files past their expiry whose blobs were deleted

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
            sweep.files_deleted = delete_expired_files(session, self.blobs, batch=BATCH)
            workers.forget_older_than(session, timedelta(seconds=self.settings.worker_forget_after_s))
        return sweep

    def _publish(self, session: Session, job_id: str, model: str) -> None:
        publish_generate(self.celery, job_id, model)
        jobs.mark_published(session, job_id)

    def _publish_unpublished(self, session: Session) -> int:
        rows = overdue.unpublished_jobs(session, limit=BATCH)
        for job_id, model in rows:
            self._publish(session, job_id, model)
        return len(rows)

    def _recover_lost_runs(self, session: Session) -> tuple[int, int]:
        rows = overdue.silent_runs(
            session, silent_for=timedelta(seconds=self.settings.worker_lost_after_s), limit=BATCH
        )
        requeued = failed = 0
        for job_id, model, attempts, worker in rows:
            if attempts >= self.settings.max_attempts:
                message = (
                    f"The worker running this job stopped responding on each of its {attempts} "
                    "attempts (it may run out of memory on this request); giving up."
                )
                if not jobs.fail(session, job_id, code="worker_lost", message=message, attempt=attempts):
                    continue
                log.error("job %s lost its worker %s on attempt %d; failed", job_id, worker, attempts)
                if not self.settings.keep_inputs:
                    delete_blobs(self.blobs, f"inputs/{job_id}")
                failed += 1
            else:
                if not jobs.requeue(session, job_id, attempt=attempts):
                    continue
                log.warning("job %s lost its worker %s on attempt %d; requeued", job_id, worker, attempts)
                self._publish(session, job_id, model)
                requeued += 1
            # What the lost run stored before it died (it may have uploaded, then died before
            # completing) is no one's: no attempt can complete with it any more.
            delete_blobs(self.blobs, *attempt_prefixes(job_id, attempts))
        return requeued, failed

    def _republish_lost_messages(self, session: Session) -> int:
        rows = overdue.published_long_ago(
            session, waiting_for=timedelta(seconds=self.settings.republish_after_s), limit=BATCH
        )
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
        dispatched = 0
        for event_id in webhook_events.due_for_dispatch(session, limit=BATCH):
            if not webhook_events.lease_for_dispatch(session, event_id):
                continue  # another sweeper took it
            try:
                publish_webhook(self.celery, event_id)
            except BrokerError:
                webhook_events.release_dispatch(session, event_id)
                raise
            dispatched += 1
        return dispatched


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
