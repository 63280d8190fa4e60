"""`darkroom worker`: one Celery consumer whose single child process holds the pipelines.

The parent process never imports torch: the child loads every served pipeline once, in
`worker_process_init`, before it takes its first job, and keeps them resident. Prefork with one
child (rather than the solo pool) keeps the parent free to heartbeat and to notice a child that
died mid-job (out of memory, say), so `reject_on_worker_lost` can give the message back.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from darkroom.processes import EXIT_CANNOT_START
from darkroom.settings import Settings
from storage.blobs import make_blob_store
from storage.db import make_engine, make_session_factory
from worker.celery_app import GENERATE_TASK, make_celery
from worker.execute import WorkerContext, execute
from worker.loading import load_runners
from worker.presence import Presence
from worker.rank_group import GroupRunner, RankGroup

log = logging.getLogger("darkroom.worker")

_context: WorkerContext | None = None
_presence: Presence | None = None
_group: RankGroup | None = None  # the follower ranks, when this worker is sharded
# Shared memory made before the pool forks: the child sets it, the parent reads it on the way out.
_child_refused = multiprocessing.Value("b", 0, lock=False)


def build_context(settings: Settings, worker_id: str, group: RankGroup | None = None) -> WorkerContext:
    runners = load_runners(settings)
    if group is not None:
        group.wait_ready()  # every follower has its shards loaded too
        runners = {name: GroupRunner(group, name, runner) for name, runner in runners.items()}
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
        try:
            execute(_context, job_id)
        finally:
            if _group is not None and _group.broken:
                # The job's end is written; the ranks may be out of step, so this child leaves
                # and the prefork parent starts a fresh one, which rebuilds the group. The message
                # comes back (worker lost) and is skipped: its job is no longer queued.
                log.error("rank group broken (%s); restarting this worker process", _group.lost or "an error")
                raise SystemExit(70)

    @worker_process_init.connect(weak=False)
    def _load_pipelines(**_kwargs) -> None:
        try:
            _start_serving(app, settings)
        except BaseException as error:
            # Celery logs a failing worker_process_init handler and carries on, and this child
            # would then take jobs it cannot run. Refuse to start instead: the parent is told to
            # shut down, and this child leaves before taking a job.
            log.critical("worker cannot start: %s", error, exc_info=True)
            _child_refused.value = 1
            os.kill(os.getppid(), signal.SIGTERM)
            os._exit(EXIT_CANNOT_START)

    @worker_process_shutdown.connect(weak=False)
    def _mark_stopped(**_kwargs) -> None:
        if _presence is not None:
            _presence.stop()
        if _group is not None:
            _group.close()


def _start_serving(app: Celery, settings: Settings) -> None:
    """In the pool's child: load every served pipeline, then say this worker is present."""
    global _context, _presence, _group
    if settings.parallel_plan.sharded:
        from pipelines.loader import resolve_model_path
        from pipelines.spec.registry import get_model

        # A tiny model is built into the models directory on first use: once, here, before the
        # ranks would all build it into the same directory at once.
        for name in settings.models:
            resolve_model_path(get_model(name), settings.resolved_models_dir)
        _group = RankGroup(settings.parallel_plan).start()
    _context = build_context(settings, f"{socket.gethostname()}:{os.getpid()}", _group)
    _presence = Presence(
        settings,
        _context.sessions,
        role="generation",
        models=settings.models,
        queues=[queue.name for queue in app.conf.task_queues],
        # Rank 0's device: the followers' memory is in their own processes.
        device=settings.parallel_plan.devices[0] if _group is not None else settings.device,
        stats=_context.stats,
    ).start()
    log.info("worker ready: serving %s", ", ".join(settings.models))


def check_parallel_plan(settings: Settings) -> None:
    """Refuse, before anything is forked or loaded, a sharded group whose options cannot run."""
    from pipelines.spec.parallel_plan import check_plan
    from pipelines.spec.registry import get_model

    specs = [get_model(name) for name in settings.models]
    check_plan(
        settings.parallel_plan,
        specs,
        {spec.name: settings.model_cache.get(spec.name, spec.cache) for spec in specs},
    )


def run_worker(settings: Settings, *, loglevel: str = "INFO") -> None:
    check_parallel_plan(settings)
    app = make_celery(settings)
    register_tasks(app, settings)
    try:
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
    finally:
        if _child_refused.value:
            # The child said why; the worker's status says that it refused, not that it stopped.
            raise SystemExit(EXIT_CANNOT_START)
