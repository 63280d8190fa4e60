"""Watching one running attempt from a thread, so the denoising loop never waits on the database.

The step callback only stores the progress in memory and raises if the job must stop. The watch
thread does the bookkeeping: every `job_watch_interval_s` it reads whether this attempt still owns
the job (a DELETE cancels it; the sweeper may have handed it to another worker), every
`heartbeat_interval_s` it writes progress and a heartbeat instead, and it enforces the job's time
limit. A cancel therefore stops the GPU at the first step after the next look, within about one
step's time, and no step ever waits for a round trip to Postgres.
"""

from __future__ import annotations

import contextvars
import logging
import os
import signal
import threading
import time
from enum import StrEnum

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from darkroom.settings import Settings
from storage import jobs

log = logging.getLogger("darkroom.worker")

DENOISE_SHARE = 95  # progress reaches this at the last step; encoding and upload make the rest
TIME_LIMIT_CODE = "job_time_limit_exceeded"


class StopReason(StrEnum):
    # The attempt no longer owns the job: it was deleted, or requeued and claimed elsewhere.
    NOT_OWNER = "not_owner"
    TIME_LIMIT = "time_limit"


class JobStopped(Exception):
    def __init__(self, reason: StopReason) -> None:
        super().__init__(reason)
        self.reason = reason


def _end_this_process() -> None:
    # The prefork parent notices, starts a fresh child, and gives the message back; the job is
    # already failed, so the redelivered message is skipped.
    os.kill(os.getpid(), signal.SIGKILL)


class JobMonitor:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        job_id: str,
        attempt: int,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.job_id = job_id
        self.attempt = attempt
        self.progress = 0
        self.stop_reason: StopReason | None = None
        self._started = time.monotonic()
        self._ended = threading.Event()
        # In the job's log context, so the watch thread's lines carry its job_id too.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._watch,), name=f"watch-{job_id}", daemon=True
        )

    def __enter__(self) -> JobMonitor:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._ended.set()
        self._thread.join()

    def on_step(self, step: int, total: int) -> None:
        """The pipeline's step callback: memory only."""
        self.progress = DENOISE_SHARE * step // total
        self.raise_if_stopped()

    def set_progress(self, progress: int) -> None:
        self.progress = progress
        self.raise_if_stopped()

    def raise_if_stopped(self) -> None:
        if self.stop_reason is not None:
            raise JobStopped(self.stop_reason)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._started

    def _watch(self) -> None:
        limit = self.settings.job_time_limit_s
        last_beat = time.monotonic()
        with self.sessions() as session:
            while not self._ended.wait(self.settings.job_watch_interval_s):
                if self.elapsed_s > limit + self.settings.job_time_limit_grace_s:
                    self._overrun(session)
                    return
                if self.elapsed_s > limit and self.stop_reason is None:
                    self.stop_reason = StopReason.TIME_LIMIT
                try:
                    if time.monotonic() - last_beat >= self.settings.heartbeat_interval_s:
                        owned = jobs.heartbeat(session, self.job_id, attempt=self.attempt, progress=self.progress)
                        last_beat = time.monotonic()
                    else:
                        owned = jobs.is_running(session, self.job_id, attempt=self.attempt)
                except SQLAlchemyError as error:
                    # The database is away; keep running, the job's result is retried at the end.
                    session.rollback()
                    log.warning("job %s: could not reach the database: %s", self.job_id, error)
                    continue
                if not owned and self.stop_reason is None:
                    self.stop_reason = StopReason.NOT_OWNER

    def _overrun(self, session: Session) -> None:
        """Still running well past the limit: stuck outside the steps, where no check can reach."""
        limit = self.settings.job_time_limit_s
        overrun_s = self.elapsed_s - limit
        log.error("job %s is stuck %.0f s past its %g s limit; ending this worker process", self.job_id, overrun_s, limit)
        try:
            jobs.fail(
                session,
                self.job_id,
                code=TIME_LIMIT_CODE,
                message=f"The job ran past its {limit:g} s time limit and did not stop; its worker was restarted.",
                attempt=self.attempt,
            )
        except SQLAlchemyError:
            log.exception("job %s: could not record the time limit; the sweeper will", self.job_id)
        _end_this_process()
