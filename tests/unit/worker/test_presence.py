"""A worker's presence row on a real SQLite database: registered at start, refreshed with what the
job path reported, lost when silent, stopped when shut down cleanly."""

from __future__ import annotations

import time
from datetime import timedelta

from darkroom.settings import Settings
from storage import workers
from storage.jobs import now
from storage.models import Worker
from worker.presence import Presence, WorkerStats


def _row(sessions, worker_id: str) -> Worker:
    with sessions() as session:
        return session.get(Worker, worker_id)


def test_the_heartbeat_publishes_what_the_job_path_reported(tmp_path, sessions):
    stats = WorkerStats()
    settings = Settings(data_dir=tmp_path, worker_heartbeat_interval_s=0.02)
    presence = Presence(settings, sessions, role="generation", models=["tiny-wan"], queues=["q"], device="cpu", stats=stats)
    presence.start()
    try:
        stats.job_started("video_1")
        deadline = time.monotonic() + 5
        while _row(sessions, presence.worker_id).current_job_id != "video_1":
            assert time.monotonic() < deadline, "the heartbeat never published the current job"
            time.sleep(0.01)
        stats.job_finished("tiny-wan", timings={"queue_wait": 0.1}, run_s=1.0, error="generation_failed: boom")
        while _row(sessions, presence.worker_id).jobs_failed != 1:
            assert time.monotonic() < deadline, "the heartbeat never published the failure"
            time.sleep(0.01)
    finally:
        presence.stop()

    row = _row(sessions, presence.worker_id)
    assert row.current_job_id is None and row.last_error == "generation_failed: boom"
    assert row.models == ["tiny-wan"] and row.devices == ["cpu"] and row.memory["cpu"]["peak"] > 0
    assert row.histograms and row.stopped_at is not None
    assert workers.state_of(row, now()) == workers.WorkerState.STOPPED


def test_a_worker_silent_for_three_intervals_is_lost(tmp_path, sessions):
    with sessions() as session:
        workers.register(
            session, "h:1", role="generation", host="h", pid=1, devices=[], models=[], queues=[], heartbeat_interval_s=2.0
        )
        row = session.get(Worker, "h:1")
    assert workers.state_of(row, row.heartbeat_at + timedelta(seconds=5.9)) == workers.WorkerState.ONLINE
    assert workers.state_of(row, row.heartbeat_at + timedelta(seconds=6.1)) == workers.WorkerState.LOST
    with sessions() as session:
        assert workers.forget_older_than(session, timedelta(seconds=-1)) == 1
        assert workers.all_workers(session) == []
