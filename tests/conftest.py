"""Fixtures for real services: the machine's Postgres and Redis, and an S3 server (moto's
standalone server, a separate process spoken to over HTTP) that the session starts itself."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
import redis

from tests.processes import start_s3_server, stop

POSTGRES_ADMIN_URL = os.environ.get("DARKROOM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("DARKROOM_TEST_REDIS", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    process, endpoint = start_s3_server()
    yield endpoint
    stop(process)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the machine's Postgres for this test session, dropped at the end."""
    name = "darkroom_test_" + secrets.token_hex(4)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    redis.Redis.from_url(REDIS_TEST_URL).flushdb()
    return REDIS_TEST_URL
