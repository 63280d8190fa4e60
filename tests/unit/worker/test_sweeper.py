"""The sweeper against a real SQLite database and kombu's filesystem broker: each repair it makes,
and what it leaves alone."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from darkroom.settings import Settings
from storage import files, jobs
from storage.blobs import BlobNotFound, LocalBlobStore, make_blob_store
from storage.db import make_engine, make_session_factory, upgrade_schema
from storage.models import FilePurpose, Job, JobKind, JobStatus, StoredFile, WebhookEvent
from tests.unit.worker.test_filesystem_broker import next_job_id
from worker.celery_app import make_celery, publish_generate, queue_for, queue_length
from worker.sweeper import Sweeper


@pytest.fixture
def sweeper(tmp_path):
    settings = Settings(data_dir=tmp_path, worker_lost_after_s=30, republish_after_s=60, max_attempts=2)
    upgrade_schema(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    yield Sweeper(settings, make_session_factory(engine), make_celery(settings), make_blob_store(settings))
    engine.dispose()


def _job(sweeper: Sweeper, **values) -> str:
    with sweeper.sessions() as session:
        job_id = jobs.new_job_id(JobKind.IMAGE_GENERATION)
        jobs.create(
            session, job_id=job_id, kind=JobKind.IMAGE_GENERATION, model="tiny-qwen-image", owner="o", params={},
            webhook_url="https://example.com/hook",
        )
        session.commit()
        if values:
            session.execute(update(Job).where(Job.id == job_id).values(**values))
            session.commit()
        return job_id


def _job_row(sweeper: Sweeper, job_id: str) -> Job:
    with sweeper.sessions() as session:
        return session.get(Job, job_id)


def _ago(seconds: float):
    return jobs.now() - timedelta(seconds=seconds)


def test_a_job_whose_publish_failed_is_published(sweeper):
    job_id = _job(sweeper, published_at=None)
    assert sweeper.sweep().published == 1
    assert _job_row(sweeper, job_id).published_at is not None
    assert queue_length(sweeper.celery, queue_for("tiny-qwen-image")) == 1
    assert sweeper.sweep().published == 0


def test_a_run_whose_heartbeat_stopped_is_requeued_then_failed_at_the_attempt_limit(sweeper):
    job_id = _job(sweeper, status=JobStatus.IN_PROGRESS, attempts=1, heartbeat_at=_ago(31), worker="gone:1")
    fresh = _job(sweeper, status=JobStatus.IN_PROGRESS, attempts=1, heartbeat_at=_ago(1))
    sweep = sweeper.sweep()
    assert (sweep.requeued, sweep.failed) == (1, 0)
    job = _job_row(sweeper, job_id)
    assert (job.status, job.worker, job.attempts) == ("queued", None, 1)
    assert queue_length(sweeper.celery, queue_for("tiny-qwen-image")) == 1
    assert _job_row(sweeper, fresh).status == "in_progress"

    # Its second run dies too: with max_attempts=2 it fails, naming why, instead of looping.
    with sweeper.sessions() as session:
        assert jobs.claim(session, job_id, "w2").attempts == 2
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=_ago(31)))
        session.commit()
    assert sweeper.sweep().failed == 1
    job = _job_row(sweeper, job_id)
    assert (job.status, job.error_code) == ("failed", "worker_lost")
    assert "2 attempts" in job.error_message


def test_a_lost_message_is_published_again_only_once_its_queue_is_empty(sweeper):
    lost = _job(sweeper, published_at=_ago(61))
    waiting = _job(sweeper, published_at=_ago(1))
    assert sweeper.sweep().republished == 1  # the queue was empty: the message is gone
    assert queue_length(sweeper.celery, queue_for("tiny-qwen-image")) == 1
    with sweeper.sessions() as session:
        session.execute(update(Job).where(Job.id == lost).values(published_at=_ago(61)))
        session.commit()
    # Now a message waits in the queue: the old job is waiting its turn, not lost.
    assert sweeper.sweep().republished == 0
    assert _job_row(sweeper, waiting).status == "queued"


def test_the_job_of_an_unreadable_message_is_published_again(sweeper):
    job_id = _job(sweeper)
    publish_generate(sweeper.celery, job_id, "tiny-qwen-image")
    [message] = (sweeper.settings.data_dir / "broker").glob("*.msg")
    message.write_bytes(message.read_bytes()[:40])  # cut short on disk
    assert next_job_id(sweeper.celery) is None  # set aside, not raised in the consumer
    assert sweeper.sweep().republished == 0  # too recent to call lost
    with sweeper.sessions() as session:
        session.execute(update(Job).where(Job.id == job_id).values(published_at=_ago(61)))
        session.commit()
    assert sweeper.sweep().republished == 1
    assert next_job_id(sweeper.celery) == job_id


def test_due_webhook_events_are_dispatched_once_per_lease(sweeper):
    job_id = _job(sweeper, status=JobStatus.IN_PROGRESS, attempts=1, heartbeat_at=_ago(0))
    with sweeper.sessions() as session:
        assert jobs.fail(session, job_id, code="x", message="y")
    assert sweeper.sweep().webhooks == 1
    assert sweeper.sweep().webhooks == 0  # leased: already in the webhook queue
    with sweeper.sessions() as session:
        event = session.query(WebhookEvent).filter_by(job_id=job_id).one()
        assert event.dispatched_at is not None
        event.dispatched_at = _ago(301)  # its message was lost: the lease ran out
        session.commit()
    assert sweeper.sweep().webhooks == 1


def test_results_past_their_retention_are_deleted_and_the_job_marked(sweeper):
    past, fresh = jobs.now() - timedelta(seconds=1), jobs.now() + timedelta(hours=1)
    expired = _job(sweeper, status=JobStatus.COMPLETED, expires_at=past)
    kept = _job(sweeper, status=JobStatus.COMPLETED, expires_at=fresh)
    for job_id in (expired, kept):
        sweeper.blobs.put(f"outputs/{job_id}/1/image-0.png", b"png", "image/png")
        sweeper.blobs.put(f"inputs/{job_id}/image-0.png", b"png", "image/png")
        sweeper.blobs.put(f"partials/{job_id}/1/0.png", b"png", "image/png")  # a streamed image's preview

    assert sweeper.sweep().expired == 1
    assert sweeper.sweep().expired == 0  # once

    with sweeper.sessions() as session:
        assert session.get(Job, expired).expired_at is not None
        assert session.get(Job, kept).expired_at is None
    def stored(job_id: str) -> list[str]:
        kinds = ("outputs", "inputs", "partials")
        return [f"{kind}/{job_id}" for kind in kinds if (sweeper.blobs.root / kind / job_id).exists()]

    assert stored(expired) == []
    assert stored(kept) == [f"outputs/{kept}", f"inputs/{kept}", f"partials/{kept}"]


def test_results_stay_unexpired_while_the_blob_store_is_down(sweeper):
    class Unreachable(LocalBlobStore):
        def delete_prefix(self, prefix: str) -> None:
            raise OSError("connection refused")

    job_id = _job(sweeper, status=JobStatus.COMPLETED, expires_at=jobs.now() - timedelta(seconds=1))
    sweeper.blobs = Unreachable(sweeper.blobs.root)

    assert sweeper.sweep().expired == 0
    with sweeper.sessions() as session:
        assert session.get(Job, job_id).expired_at is None  # tried again on a later tick


def _file(sweeper: Sweeper, expires_at) -> str:
    file_id = files.new_file_id()
    sweeper.blobs.put(files.blob_key(file_id), b'{"custom_id": "a"}\n', "application/jsonl")
    with sweeper.sessions() as session:
        files.create(
            session, file_id=file_id, owner="o", purpose=FilePurpose.BATCH, filename="a.jsonl", size=18,
            content_type="application/jsonl", expires_at=expires_at, line_count=1,
        )
        session.commit()
    return file_id


def test_files_past_their_expiry_are_deleted_blob_then_row(sweeper):
    expired = _file(sweeper, _ago(1))
    fresh, kept = _file(sweeper, jobs.now() + timedelta(hours=1)), _file(sweeper, None)

    assert sweeper.sweep().files_deleted == 1
    assert sweeper.sweep().files_deleted == 0  # once
    assert not _stored(sweeper.blobs, files.blob_key(expired))
    assert _stored(sweeper.blobs, files.blob_key(fresh)) and _stored(sweeper.blobs, files.blob_key(kept))
    with sweeper.sessions() as session:
        assert session.get(StoredFile, expired).deleted_at is not None
        assert session.get(StoredFile, fresh).deleted_at is None and session.get(StoredFile, kept).deleted_at is None


def test_an_expired_file_stays_undeleted_while_the_blob_store_is_down(sweeper):
    class Unreachable(LocalBlobStore):
        def delete(self, key: str) -> None:
            raise OSError("connection refused")

    file_id = _file(sweeper, _ago(1))
    sweeper.blobs = Unreachable(sweeper.blobs.root)
    assert sweeper.sweep().files_deleted == 0
    with sweeper.sessions() as session:
        assert session.get(StoredFile, file_id).deleted_at is None  # tried again on a later tick
    sweeper.blobs = LocalBlobStore(sweeper.blobs.root)
    assert sweeper.sweep().files_deleted == 1
    assert not _stored(sweeper.blobs, files.blob_key(file_id))


def test_what_a_lost_run_stored_is_deleted_when_its_job_is_requeued_or_failed(sweeper):
    """A run killed between its upload and its completion leaves outputs no attempt will claim."""
    requeued = _job(sweeper, status=JobStatus.IN_PROGRESS, attempts=1, heartbeat_at=_ago(31))
    failed = _job(sweeper, status=JobStatus.IN_PROGRESS, attempts=2, heartbeat_at=_ago(31))
    for job_id, attempt in ((requeued, 1), (failed, 2)):
        sweeper.blobs.put(f"outputs/{job_id}/{attempt}/0.png", b"png", "image/png")
        sweeper.blobs.put(f"partials/{job_id}/{attempt}/0.png", b"png", "image/png")
        sweeper.blobs.put(f"outputs/{job_id}/{attempt + 10}/0.png", b"png", "image/png")  # not a prefix match
    sweep = sweeper.sweep()
    assert (sweep.requeued, sweep.failed) == (1, 1)
    for job_id, attempt in ((requeued, 1), (failed, 2)):
        assert not _stored(sweeper.blobs, f"outputs/{job_id}/{attempt}/0.png")
        assert not _stored(sweeper.blobs, f"partials/{job_id}/{attempt}/0.png")
        assert _stored(sweeper.blobs, f"outputs/{job_id}/{attempt + 10}/0.png")


def _stored(blobs, key: str) -> bool:
    try:
        blobs.head(key)
    except BlobNotFound:
        return False
    return True
