"""Fixtures for real services: the machine's Postgres and Redis, and an S3 server (moto's
standalone server, a separate process spoken to over HTTP) that the session starts itself."""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator

import pytest

from bench.processes import command_line, start_s3_server, started_with, stop, wait_until
from tests.stack import create_database, drop_database, private_redis_db

# Every process the tests start inherits this (not a DARKROOM_ setting, which some tests clear):
# at the end, the session looks for its own processes still running.
SESSION_VARIABLE, SESSION_ID = "PYTEST_DARKROOM_SESSION", secrets.token_hex(8)
os.environ[SESSION_VARIABLE] = SESSION_ID


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Fails the session if a process a test started outlives it (and then ends them): a worker
    left consuming would take the next session's jobs."""
    yield

    def left() -> list[int]:
        return [pid for pid in started_with(f"{SESSION_VARIABLE}={SESSION_ID}") if pid != os.getpid()]

    try:  # a worker told to stop may still be finishing its warm shutdown
        wait_until(lambda: not left(), timeout_s=30, what="the session's processes to exit")
    except TimeoutError:
        leftovers = left()
        listed = "\n".join(f"  {pid}: {command_line(pid)}" for pid in leftovers)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the test session left {len(leftovers)} processes running (now killed):\n{listed}")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    process, endpoint = start_s3_server()
    yield endpoint
    stop(process)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the machine's Postgres for this test session, dropped at the end."""
    url = create_database()
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database of this session's own (tests/stack.py), flushed."""
    with private_redis_db() as url:
        yield url
