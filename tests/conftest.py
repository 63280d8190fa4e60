"""Fixtures for real services: the machine's Postgres and Redis, and an S3 server (moto's
standalone server, a separate process spoken to over HTTP) that the session starts itself."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from bench.processes import start_s3_server, stop
from tests.stack import create_database, drop_database

REDIS_TEST_URL = os.environ.get("DARKROOM_TEST_REDIS", "redis://127.0.0.1:6379/13")


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
def redis_url() -> str:
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    return REDIS_TEST_URL
