"""Unit-test fixtures: a real SQLite database built by the migrations, one per test."""

from __future__ import annotations

import pytest

from storage.db import make_engine, make_session_factory, upgrade_schema


@pytest.fixture
def sessions(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()
