"""The watch thread of a running attempt, on a real SQLite database: a cancel, a takeover and the
time limit each stop the job at its next step; progress and heartbeats are written off the step."""

from __future__ import annotations

import time

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


def _steps_until_stopped(monitor: JobMonitor, timeout_s: float = 5.0) -> JobStopped:
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
    with sessions() as session:
        first_beat = session.get(Job, job_id).heartbeat_at
    with JobMonitor(_settings(tmp_path), sessions, job_id, attempt) as monitor:
        monitor.on_step(5, 10)
        time.sleep(0.3)
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job.progress == 47  # 95 % of the way is the denoising share
        assert job.heartbeat_at > first_beat


def test_the_time_limit_stops_the_job_at_its_next_step(tmp_path, sessions):
    job_id, attempt = _running_job(sessions)
    with JobMonitor(_settings(tmp_path, job_time_limit_s=0.05), sessions, job_id, attempt) as monitor:
        assert _steps_until_stopped(monitor).reason == StopReason.TIME_LIMIT


def test_a_job_stuck_past_its_limit_is_failed_and_its_process_ended(tmp_path, sessions):
    job_id, attempt = _running_job(sessions)
    ended = []
    settings = _settings(tmp_path, job_time_limit_s=0.05, job_time_limit_grace_s=0.05)
    # Ending the real process is replaced by a record of the call: the test runs in this process.
    with JobMonitor(settings, sessions, job_id, attempt, on_overrun=lambda: ended.append(True)):
        time.sleep(0.5)  # stuck outside the steps: no callback runs
    assert ended == [True]
    with sessions() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.error_code) == ("failed", TIME_LIMIT_CODE)
