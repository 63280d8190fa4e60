"""A worker process's presence row, kept fresh by a heartbeat thread: what `/health/workers` lists
and where `/metrics` finds each worker's memory and job duration histograms.

The job path only updates `WorkerStats` in memory; the thread writes it every
`worker_heartbeat_interval_s`, so a job never waits on this bookkeeping.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import sys
import threading
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from darkroom.settings import Settings
from darkroom.telemetry import JobHistograms
from storage import workers
from storage.jobs import now

log = logging.getLogger("darkroom.presence")

_MAX_ERROR_CHARS = 1000


class WorkerStats:
    """What the job path tells the heartbeat: the job in hand, totals, the last error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current_job_id: str | None = None
        self.jobs_completed = 0
        self.jobs_failed = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.histograms = JobHistograms()

    def job_started(self, job_id: str) -> None:
        with self._lock:
            self.current_job_id = job_id

    def job_finished(
        self, model: str, *, timings: dict[str, float], run_s: float, error: str | None = None
    ) -> None:
        with self._lock:
            self.current_job_id = None
            if error is None:
                self.jobs_completed += 1
            else:
                self.jobs_failed += 1
                self.last_error, self.last_error_at = error[:_MAX_ERROR_CHARS], now()
        self.histograms.observe_job(model, timings, run_s)

    def job_left(self) -> None:
        """The job ended without a result of this worker's (cancelled, taken over)."""
        with self._lock:
            self.current_job_id = None

    def as_row(self) -> dict:
        with self._lock:
            row = {
                "current_job_id": self.current_job_id,
                "jobs_completed": self.jobs_completed,
                "jobs_failed": self.jobs_failed,
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
            }
        return row | {"histograms": self.histograms.snapshot()}


def device_memory(device: str | None) -> dict[str, dict[str, int]]:
    """Bytes in use and peak: torch's allocator per visible GPU (CUDA and ROCm alike), or the
    process's resident memory on the CPU. Never imports torch into a process that has none."""
    if device is None:
        return {}
    if device.startswith("cuda") and "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            return {
                f"cuda:{index}": {
                    "in_use": torch.cuda.memory_allocated(index),
                    "peak": torch.cuda.max_memory_allocated(index),
                }
                for index in range(torch.cuda.device_count())
            }
    in_use = _resident_bytes()
    # Two sources (statm now, getrusage's high-water mark) that can disagree by a page or two.
    return {"cpu": {"in_use": in_use, "peak": max(in_use, _peak_resident_bytes())}}


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _peak_resident_bytes()


def _peak_resident_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


class Presence:
    """Register on `start`, heartbeat from a daemon thread, mark stopped on `stop`."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        role: str,
        models: Iterable[str] = (),
        queues: Iterable[str] = (),
        device: str | None = None,
        stats: WorkerStats | None = None,
    ) -> None:
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.settings = settings
        self.sessions = sessions
        self.device = device
        self.stats = stats
        self._description = {
            "role": role,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "devices": [device] if device else [],
            "models": list(models),
            "queues": list(queues),
            "heartbeat_interval_s": settings.worker_heartbeat_interval_s,
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name="presence", daemon=True)

    def start(self) -> Presence:
        try:
            with self.sessions() as session:
                workers.register(session, self.worker_id, **self._description)
        except SQLAlchemyError as error:
            # The heartbeat cannot refresh a row that was never written; it retries the insert.
            log.warning("could not register worker %s yet: %s", self.worker_id, error)
            self._registered = False
        else:
            self._registered = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            with self.sessions() as session:
                workers.mark_stopped(session, self.worker_id)
        except SQLAlchemyError as error:
            log.warning("could not mark worker %s stopped: %s", self.worker_id, error)

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.settings.worker_heartbeat_interval_s):
            try:
                with self.sessions() as session:
                    if not self._registered:
                        workers.register(session, self.worker_id, **self._description)
                        self._registered = True
                    state = self.stats.as_row() if self.stats else {}
                    workers.beat(session, self.worker_id, memory=device_memory(self.device), **state)
            except SQLAlchemyError as error:
                log.warning("worker heartbeat skipped: %s", error)
