"""The embedded broker (worker/filesystem_broker.py) through Celery's own connections: a message is
there whole or not at all, and a file that is not a message is set aside while the next message
is delivered. The sweeper's side (the set-aside message's job is published again) is in
test_sweeper.py."""

from __future__ import annotations

import builtins
import io
import logging

import pytest
from kombu import Exchange, Producer, Queue
from kombu.transport import filesystem
from kombu.transport.virtual import BrokerState

from darkroom.settings import Settings
from worker.celery_app import make_celery, publish_generate, queue_for, queue_length

MODEL = "tiny-qwen-image"
QUEUE = queue_for(MODEL)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path)


@pytest.fixture
def celery(settings, monkeypatch):
    # Kombu keeps the bindings a process made in one state for every filesystem connection; a
    # fresh one per test, so each test's broker folder gets its own tables.
    monkeypatch.setattr(filesystem.Transport, "global_state", BrokerState())
    return make_celery(settings)


def next_job_id(celery) -> str | None:
    """The job id of the next message in tiny-qwen-image's queue, taken and acknowledged; None if
    the queue is empty."""
    with celery.connection_for_write() as connection, connection.channel() as channel:
        message = channel.basic_get(QUEUE, no_ack=True)
        return None if message is None else message.decode()[0][0]


class WriterKilled(BaseException):
    """The publishing process dying mid-write, as far as the code under test can tell."""


class _DiesHalfWay:
    def __init__(self, file) -> None:
        self._file = file

    def write(self, data: bytes) -> int:
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        raise WriterKilled

    def __enter__(self):
        return self

    def __exit__(self, *_exc) -> None:
        self._file.close()

    def __getattr__(self, name: str):
        return getattr(self._file, name)


def _die_writing(monkeypatch, marker: str) -> None:
    """From now on, a process writing a file whose path holds `marker` dies half-way through."""
    real_open = io.open

    def open_that_dies(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return _DiesHalfWay(file) if "w" in mode and marker in str(path) else file

    monkeypatch.setattr(builtins, "open", open_that_dies)
    monkeypatch.setattr(io, "open", open_that_dies)  # pathlib's


def test_a_publisher_that_dies_mid_message_leaves_no_message(settings, celery, monkeypatch):
    publish_generate(celery, "declares_the_queue", MODEL)
    assert next_job_id(celery) == "declares_the_queue"
    with monkeypatch.context() as patch, pytest.raises(WriterKilled):
        _die_writing(patch, ".msg")
        publish_generate(celery, "job_half_written", MODEL)

    assert queue_length(celery, QUEUE) == 0
    assert next_job_id(celery) is None
    assert not list((settings.data_dir / "broker" / "rejected").glob("*"))


def test_a_process_that_dies_creating_an_exchange_table_leaves_none(celery, monkeypatch):
    # Celery's events go through a topic exchange, whose table of bindings every publish reads.
    exchange = Exchange("darkroom.test", type="topic")
    queue = Queue("watcher", exchange, routing_key="job.#")
    with monkeypatch.context() as patch, pytest.raises(WriterKilled):
        _die_writing(patch, ".exchange")
        with celery.connection_for_write() as connection:
            queue(connection.default_channel).declare()

    monkeypatch.setattr(filesystem.Transport, "global_state", BrokerState())  # the next process
    with celery.connection_for_write() as connection:
        bound = queue(connection.default_channel)
        bound.declare()  # a half-written table: "Unterminated string"
        Producer(connection.default_channel).publish({"job": "done"}, exchange=exchange, routing_key="job.done")
        assert bound.get(no_ack=True).payload == {"job": "done"}


@pytest.mark.parametrize(
    "content",
    [b"", b'{"body": "W1siam9i', b"not json at all", b"[1, 2]", b'{"body": "e30=", "properties": {}}'],
    ids=["empty", "cut short", "not json", "not an object", "not a message"],
)
def test_a_file_that_is_not_a_message_is_set_aside_once_and_the_next_one_delivered(
    settings, celery, caplog, content
):
    publish_generate(celery, "job_after", MODEL)
    broker = settings.data_dir / "broker"
    bad = broker / f"0_bad.{QUEUE}.msg"  # sorts first: taken before the good one
    bad.write_bytes(content)
    assert queue_length(celery, QUEUE) == 2

    with caplog.at_level(logging.ERROR, logger="darkroom.broker"):
        assert next_job_id(celery) == "job_after"
        assert next_job_id(celery) is None

    assert [path.name for path in (broker / "rejected").iterdir()] == [bad.name]
    assert (broker / "rejected" / bad.name).read_bytes() == content
    logged = [record.getMessage() for record in caplog.records if record.name == "darkroom.broker"]
    assert len(logged) == 1 and logged[0].startswith(f"broker message {bad.name} is not readable")
