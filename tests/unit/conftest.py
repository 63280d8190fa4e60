"""Unit-test fixtures: a real database built by the migrations, one per test (SQLite, or each of
SQLite and the machine's Postgres where a directory or module overrides `database`), and an HTTP
receiver for webhook deliveries."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import pytest

from storage.db import make_engine, make_session_factory, upgrade_schema
from tests.unit.webhook_support import Receiver


@pytest.fixture
def database() -> str:
    """The database `sessions` is built on. Where a behaviour must hold on each database Darkroom
    runs on, override it: `@pytest.fixture(params=["sqlite", "postgres"])`."""
    return "sqlite"


@pytest.fixture
def sessions(request, database, tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if database == "sqlite" else request.getfixturevalue("postgres_url")
    upgrade_schema(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(
        *statuses: int, delay_s: float = 0.0, tls: ssl.SSLContext | None = None, drip_s: float = 0.0
    ) -> Receiver:
        started.append(Receiver(list(statuses), delay_s, tls=tls, drip_s=drip_s))
        return started[-1]

    yield start
    for one in started:
        one.close()
