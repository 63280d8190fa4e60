"""`darkroom webhook-worker`: a Celery worker on the webhook queue only, never on a GPU worker.
Threads, since a delivery mostly waits on I/O. What one delivery does is in `worker/webhooks.py`."""

from __future__ import annotations

import logging
import os
import socket

import httpx
from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from kombu import Queue
from sqlalchemy.orm import Session, sessionmaker

from darkroom.settings import Settings
from storage.db import make_engine, make_session_factory
from worker.celery_app import WEBHOOK_QUEUE, WEBHOOK_TASK, make_celery
from worker.presence import Presence
from worker.webhooks import deliver

log = logging.getLogger("darkroom.webhooks")

READY = "webhook worker ready"



def register_webhook_task(app: Celery, settings: Settings, sessions: sessionmaker[Session]) -> None:
    # Built once: loading the CA bundle for every attempt would cost more than many deliveries.
    tls_context = httpx.create_ssl_context()

    @app.task(name=WEBHOOK_TASK)
    def deliver_webhook(event_id: str) -> None:
        """One attempt at one webhook event; the message is only its id."""
        deliver(settings, sessions, event_id, tls_context=tls_context)


def run_webhook_worker(settings: Settings, *, loglevel: str = "INFO") -> None:
    """A Celery worker on the webhook queue only: threads, since a delivery mostly waits on I/O."""
    app = make_celery(settings)
    # make_celery declares the generate queues; this worker declares and consumes only its own.
    app.conf.task_queues = [Queue(WEBHOOK_QUEUE)]
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    register_webhook_task(app, settings, sessions)
    presence = Presence(settings, sessions, role="webhooks", queues=[WEBHOOK_QUEUE])

    @worker_ready.connect(weak=False)
    def _announce(**_kwargs) -> None:
        presence.start()
        log.info(
            "%s: consuming %s with %d threads", READY, WEBHOOK_QUEUE, settings.webhook_concurrency
        )

    @worker_shutdown.connect(weak=False)
    def _mark_stopped(**_kwargs) -> None:
        presence.stop()

    app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            "--pool=threads",
            f"--concurrency={settings.webhook_concurrency}",
            f"--hostname=darkroom-webhooks-{os.getpid()}@{socket.gethostname()}",
            "--without-mingle",
            "--without-gossip",
            f"--queues={WEBHOOK_QUEUE}",
        ]
    )
