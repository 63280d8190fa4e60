"""The watch thread of a running attempt, on a real SQLite database: a cancel, a takeover and the
time limit each stop the job at its next step; progress and heartbeats are written off the step."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from bench.processes import wait_until
from darkroom.settings import Settings
from storage import jobs
from storage.models import Job, JobKind
from worker.monitor import TIME_LIMIT_CODE, JobMonitor, JobStopped, StopReason


def _settings(tmp_path, **values) -> Settings:
    defaults = {"job_watch_interval_s": 0.01, "heartbeat_interval_s": 0.05}
    return Settings(data_dir=tmp_path, **(defaults | values))


def _running_job(sessions) -> tuple[str, int]:
    with sessions() as session:
        job_id = jobs.new_job_id(JobKind.VIDEO)
        jobs.create(session, job_id=job_id, kind=JobKind.VIDEO, model="tiny-wan", owner="o", params={})
        session.commit()
        return job_id, jobs.claim(session, job_id, "w1").attempts


def _steps_until_stopped(monitor: JobMonitor, timeout_s: float = 30.0) -> JobStopped:
    deadline = time.monotonic() + timeout_s
    step = 0
    while time.monotonic() < deadline:
        step += 1
        try:
            monitor.on_step(step % 10, 10)
        except JobStopped as stopped:
            return stopped
        time.sleep(0.005)  # one "denoising step"
    raise AssertionError("the job was never told to stop")


def test_a_cancel_stops_the_job_at_a_following_step(tmp_path, sessions):
    job_id, attempt = _running_job(sessions)
    with JobMonitor(_settings(tmp_path), sessions, job_id, attempt) as monitor:
        monitor.on_step(1, 10)
        with sessions() as session:
            assert jobs.cancel(session, job_id)
        assert _steps_until_stopped(monitor).reason == StopReason.NOT_OWNER


def test_a_job_requeued_and_claimed_elsewhere_stops_here(tmp_path, sessions):
    job_id, attempt = _running_job(sessions)
    with JobMonitor(_settings(tmp_path), sessions, job_id, attempt) as monitor:
        with sessions() as session:
            assert jobs.requeue(session, job_id, attempt=attempt)
            assert jobs.claim(session, job_id, "w2") is not None
        assert _steps_until_stopped(monitor).reason == StopReason.NOT_OWNER


def test_progress_and_heartbeat_are_written_by_the_watch_thread(tmp_path, sessions):
    job_id, attempt = _running_job(sessions)
    first_beat = _job(sessions, job_id).heartbeat_at
    with JobMonitor(_settings(tmp_path), sessions, job_id, attempt) as monitor:
        monitor.on_step(5, 10)
        # 95 % of the way is the denoising share.
        job = wait_until(
            lambda: (job := _job(sessions, job_id)).progress == 47 and job.heartbeat_at > first_beat and job,
            what="a heartbeat with the progress",
        )
    assert job.status == "in_progress"


def test_the_time_limit_stops_the_job_at_its_next_step(tmp_path, sessions):
    job_id, attempt = _running_job(sessions)
    with JobMonitor(_settings(tmp_path, job_time_limit_s=0.05), sessions, job_id, attempt) as monitor:
        assert _steps_until_stopped(monitor).reason == StopReason.TIME_LIMIT


_STUCK_JOB = """
import sys, time
from darkroom.settings import Settings
from storage.db import make_engine, make_session_factory
from worker.monitor import JobMonitor

data_dir, database_url, job_id, attempt = sys.argv[1:]
settings = Settings(data_dir=data_dir, job_watch_interval_s=0.01, job_time_limit_s=0.05, job_time_limit_grace_s=0.05)
with JobMonitor(settings, make_session_factory(make_engine(database_url)), job_id, int(attempt)):
    time.sleep(600)  # stuck outside the steps: no step callback runs to stop it
"""


def test_a_job_stuck_past_its_limit_is_failed_and_its_process_ended(tmp_path, sessions):
    job_id, attempt = _running_job(sessions)
    database_url = sessions.kw["bind"].url.render_as_string(hide_password=False)
    # A process of its own, as the worker's pool child is: the monitor ends the process it runs in.
    stuck = subprocess.run(
        [sys.executable, "-c", _STUCK_JOB, str(tmp_path), database_url, job_id, str(attempt)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stuck.returncode == -signal.SIGKILL, stuck.stderr[-2000:]
    assert "is stuck" in stuck.stderr and "ending this worker process" in stuck.stderr
    job = _job(sessions, job_id)
    assert (job.status, job.error_code) == ("failed", TIME_LIMIT_CODE)


def _job(sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)
