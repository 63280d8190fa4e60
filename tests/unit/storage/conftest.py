"""Every storage test runs on SQLite and on the machine's Postgres (schema built by the
migrations): a compare-and-set must hold on both."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def database(request) -> str:
    return request.param
