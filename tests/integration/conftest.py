"""A live Darkroom for the integration tests: uvicorn and a Celery worker as separate processes
against the machine's real Postgres and Redis and an S3 server process, driven with the official
openai SDK. Nothing is mocked; the models are the tiny offline ones."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from storage.db import upgrade_schema
from tests.processes import (
    WORKER_READY,
    dump_logs,
    free_port,
    make_bucket,
    spawn,
    stop,
    wait_for_log,
    wait_for_port,
)

KEY_A, KEY_B = "sk-test-tenant-a", "sk-test-tenant-b"


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    data_dir: Path
    worker_log: Path

    def client(self, api_key: str = KEY_A, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kwargs)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """The tiny models are built once per session, then loaded by every worker from disk."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def stack(tmp_path_factory, models_dir, postgres_url, redis_url, s3_endpoint) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("darkroom")
    env = {
        **os.environ,
        "DARKROOM_DATA_DIR": str(data_dir),
        "DARKROOM_MODELS_DIR": str(models_dir),
        "DARKROOM_DATABASE_URL": postgres_url,
        "DARKROOM_BROKER_URL": redis_url,
        "DARKROOM_S3_BUCKET": make_bucket(s3_endpoint),
        "DARKROOM_S3_ENDPOINT_URL": s3_endpoint,
        "DARKROOM_S3_ACCESS_KEY_ID": "test",
        "DARKROOM_S3_SECRET_ACCESS_KEY": "test",
        "DARKROOM_API_KEYS": f"{KEY_A},{KEY_B}",
        "DARKROOM_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
        "DARKROOM_MAX_UPLOAD_PIXELS": str(1024 * 1024),
        "DARKROOM_PROGRESS_INTERVAL_S": "0",
    }
    upgrade_schema(postgres_url)
    port = free_port()
    worker_log, api_log = data_dir / "worker.log", data_dir / "api.log"
    worker = spawn(["worker"], env, worker_log)
    api = spawn(["api", "--port", str(port)], env, api_log)
    try:
        wait_for_port(port, api)
        wait_for_log(worker_log, WORKER_READY, worker)
        yield Stack(f"http://127.0.0.1:{port}/v1", env, data_dir, worker_log)
    finally:
        stop(api)
        stop(worker)
        dump_logs(worker_log, api_log)


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
