"""`darkroom worker`: one Celery consumer whose single child process holds the pipelines.

The parent process never imports torch: the child loads every served pipeline once, in
`worker_process_init`, before it takes its first job, and keeps them resident. Prefork with one
child (rather than the solo pool) keeps the parent free to heartbeat and to notice a child that
died mid-job (out of memory, say), so `reject_on_worker_lost` can give the message back.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from darkroom.settings import Settings
from storage.blobs import make_blob_store
from storage.db import make_engine, make_session_factory
from worker.celery_app import GENERATE_TASK, make_celery
from worker.execute import WorkerContext, execute
from worker.presence import Presence

log = logging.getLogger("darkroom.worker")

_context: WorkerContext | None = None
_presence: Presence | None = None


def build_context(settings: Settings, worker_id: str) -> WorkerContext:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from pipelines.loader import load_runner
    from pipelines.registry import get_model

    diffusers_logging.disable_progress_bar()  # one bar per component per load, in a service log
    # Both libraries log through a stderr handler of their own, in their own format: route their
    # lines through the process's root handler instead (JSON lines, ids bound).
    for library in (diffusers_logging, transformers_logging):
        library.disable_default_handler()
        library.enable_propagation()

    runners = {}
    for name in settings.models:
        started = time.perf_counter()
        runners[name] = load_runner(get_model(name), settings.resolved_models_dir, settings.device)
        log.info("loaded %s on %s in %.1f s", name, settings.device, time.perf_counter() - started)
    engine = make_engine(settings.resolved_database_url)
    return WorkerContext(
        settings=settings,
        sessions=make_session_factory(engine),
        blobs=make_blob_store(settings),
        runners=runners,
        worker_id=worker_id,
    )


def register_tasks(app: Celery, settings: Settings) -> None:
    @app.task(name=GENERATE_TASK, bind=True)
    def generate(self, job_id: str) -> None:
        """Run one generation job; the message is only its id."""
        execute(_context, job_id)

    @worker_process_init.connect(weak=False)
    def _load_pipelines(**_kwargs) -> None:
        global _context, _presence
        _context = build_context(settings, f"{socket.gethostname()}:{os.getpid()}")
        _presence = Presence(
            settings,
            _context.sessions,
            role="generation",
            models=settings.models,
            queues=[queue.name for queue in app.conf.task_queues],
            device=settings.device,
            stats=_context.stats,
        ).start()
        log.info("worker ready: serving %s", ", ".join(settings.models))

    @worker_process_shutdown.connect(weak=False)
    def _mark_stopped(**_kwargs) -> None:
        if _presence is not None:
            _presence.stop()


def run_worker(settings: Settings, *, loglevel: str = "INFO") -> None:
    app = make_celery(settings)
    register_tasks(app, settings)
    app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            "--pool=prefork",
            "--concurrency=1",
            f"--hostname=darkroom-{os.getpid()}@{socket.gethostname()}",
            "--without-mingle",
            "--without-gossip",
            f"--queues={','.join(queue.name for queue in app.conf.task_queues)}",
        ]
    )
