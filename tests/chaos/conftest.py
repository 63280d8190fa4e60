"""Fixtures for the fault tests: each test launches its own live stack (its own database, its own
redis-server, its own bucket, its own data directory), breaks a part of it on purpose, and checks
that no accepted job is lost or run twice.

`DARKROOM_CHAOS_SCALE=small` (the default, what `make test` runs) keeps the whole directory to a
few minutes on a 2-core machine; `full` (what `make chaos` runs) uses the issue's numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.processes import dump_logs
from tests.chaos.harness import shut_down
from tests.chaos.servers import RedisServer
from tests.stack import POSTGRES_ADMIN_URL, LiveStack, create_database, drop_database, start_stack

# The tiny models this directory runs; building them once keeps two workers that start together
# from building the same directory at once.
CHAOS_MODELS = ("tiny-wan", "tiny-qwen-image")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "chaos: breaks a part of a live stack (kill -9, Redis, Postgres, S3)"
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(
        item, f"chaos_{report.when}", report
    )  # the stack fixture dumps logs when the test failed
    return report


@pytest.fixture(scope="session")
def chaos_models_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chaos-models")
    subprocess.run(
        [sys.executable, "-m", "darkroom.cli", "build-tiny-models", *CHAOS_MODELS],
        env={**os.environ, "DARKROOM_MODELS_DIR": str(path), "DARKROOM_DATA_DIR": str(path.parent)},
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture
def launch(request, tmp_path, chaos_models_dir) -> Iterator[Callable[..., LiveStack]]:
    """`launch(s3_endpoint=, bucket=, ...)` starts an isolated stack and returns it; everything it
    made (processes, database, redis-server) is gone after the test. With no `database_url` a
    fresh database is created on `admin_url` (the machine's Postgres by default); with no
    `broker_url` a private redis-server is started."""
    stacks: list[LiveStack] = []
    cleanups: list[Callable[[], None]] = []

    def start(
        *,
        s3_endpoint: str,
        bucket: str,
        database_url: str | None = None,
        admin_url: str = POSTGRES_ADMIN_URL,
        broker_url: str | None = None,
        overrides: dict[str, str] | None = None,
        workers: int = 1,
    ) -> LiveStack:
        if database_url is None:
            database_url = create_database(admin_url)
            cleanups.append(lambda url=database_url: drop_database(url, admin_url))
        if broker_url is None:
            redis = RedisServer().start()
            cleanups.append(redis.stop)
            broker_url = redis.url
        data_dir = tmp_path / f"stack-{len(stacks)}"
        data_dir.mkdir()
        env = {
            # Two workers, the API and the clients share 2 cores: one torch thread each.
            "OMP_NUM_THREADS": "1",
            "DARKROOM_MODELS": "tiny-wan",
            **(overrides or {}),
        }
        stack = start_stack(
            data_dir,
            database_url=database_url,
            broker_url=broker_url,
            s3_endpoint=s3_endpoint,
            bucket=bucket,
            models_dir=chaos_models_dir,
            overrides=env,
            workers=0,
        )
        stacks.append(stack)
        # The workers start together (start_stack starts them one after another).
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(stack.start_worker, [f"worker-{index}" for index in range(workers)]))
        return stack

    yield start

    failed = any(
        getattr(getattr(request.node, f"chaos_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed:
        for stack in stacks:
            dump_logs(*sorted(stack.data_dir.glob("*.log")))
    errors = []
    for cleanup in [
        *(lambda stack=stack: shut_down(stack) for stack in stacks),
        *reversed(cleanups),
    ]:
        try:
            cleanup()
        except Exception as error:  # noqa: BLE001 - clean up the rest all the same
            errors.append(error)
    if errors:
        raise errors[0]
