"""A live Darkroom for the integration tests: uvicorn, a Celery worker, the sweeper and the webhook
worker as separate processes against the machine's real Postgres and Redis and an S3 server
process, driven with the official openai SDK. Nothing is mocked; the models are the tiny offline
ones."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from sqlalchemy import create_engine, func, select

from bench.processes import free_port, make_bucket, spawn, stop, wait_for_port
from storage.models import Job
from tests.stack import KEY_A, KEY_B, LiveStack, create_database, drop_database, start_stack

__all__ = ["KEY_A", "KEY_B"]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """The tiny models are built once per session, then loaded by every worker from disk."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def stack(tmp_path_factory, models_dir, redis_url, s3_endpoint) -> Iterator[LiveStack]:
    # A database of its own: the unit tests' jobs in the session database are never finished,
    # and the stack's sweeper would take them for runs whose worker vanished.
    database_url = create_database()
    live = start_stack(
        tmp_path_factory.mktemp("darkroom"),
        database_url=database_url,
        broker_url=redis_url,
        s3_endpoint=s3_endpoint,
        bucket=make_bucket(s3_endpoint),
        models_dir=models_dir,
    )
    yield live
    live.close()
    drop_database(database_url)


@pytest.fixture
def client(stack) -> openai.OpenAI:
    return stack.client(KEY_A)


@pytest.fixture
def other_client(stack) -> openai.OpenAI:
    return stack.client(KEY_B)


@pytest.fixture
def spawn_api(stack, tmp_path) -> Iterator:
    """Start another API process on the same stack with some settings changed; returns its base URL."""
    started: list[subprocess.Popen] = []

    def start(overrides: dict[str, str]) -> str:
        port = free_port()
        process = spawn(["api", "--port", str(port)], {**stack.env, **overrides}, tmp_path / f"api-{port}.log")
        started.append(process)
        wait_for_port(port, process)
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for process in started:
        stop(process)


@pytest.fixture
def nothing_written(stack):
    """Asserts, after the test, that no job row and no blob was added during it."""
    engine = create_engine(stack.env["DARKROOM_DATABASE_URL"])

    def snapshot():
        with engine.connect() as connection:
            rows = connection.execute(select(func.count()).select_from(Job)).scalar_one()
        return rows, set(stack.stored_keys("inputs/"))

    before = snapshot()
    yield
    assert snapshot() == before
    engine.dispose()
