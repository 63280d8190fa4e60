"""A live Darkroom made of real processes: uvicorn, Celery GPU-queue workers, the sweeper and the
webhook worker, against a given Postgres, Redis and S3 server. The integration suite runs one for
the session; the fault tests start their own, to stop and kill parts of it."""

from __future__ import annotations

import base64
import fcntl
import os
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import openai
import psycopg
import redis

from bench.processes import (
    WORKER_READY,
    descendants,
    dump_logs,
    free_port,
    spawn,
    stop,
    wait_for_log,
    wait_for_port,
)

KEY_A, KEY_B = "sk-test-tenant-a", "sk-test-tenant-b"
WEBHOOK_READY = "webhook worker ready"
POSTGRES_ADMIN_URL = os.environ.get("DARKROOM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def create_database(admin_url: str = POSTGRES_ADMIN_URL) -> str:
    """A fresh, empty database on that server; its SQLAlchemy URL."""
    name = "darkroom_test_" + secrets.token_hex(4)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}"


def drop_database(url: str, admin_url: str = POSTGRES_ADMIN_URL) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The Redis server the tests' stacks use as their broker, each in a database of its own.
REDIS_SERVER_URL = os.environ.get("DARKROOM_TEST_REDIS_SERVER", "redis://127.0.0.1:6379")
# Numbers other test sessions on the host used as fixed ones before; tried last.
_FIXED_BEFORE = (9, 12, 13, 14)


@contextmanager
def private_redis_db() -> Iterator[str]:
    """The URL of a database on the test Redis that no other stack on this host is using, flushed,
    for as long as the block runs: the number is held by a lock on a file named after it, which
    the kernel releases however the session ends. Two sessions once shared fixed numbers and
    flushed each other's queues."""
    numbers = [number for number in range(1, 16) if number not in _FIXED_BEFORE] + list(_FIXED_BEFORE)
    for number in numbers:
        lock = open(Path(tempfile.gettempdir()) / f"darkroom-tests-redis-db-{number}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        url = f"{REDIS_SERVER_URL}/{number}"
        try:
            redis.Redis.from_url(url).flushdb()
            yield url
        finally:
            lock.close()
        return
    raise RuntimeError("every Redis database on this host is in use by other test sessions")


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class LiveStack:
    env: dict[str, str]
    data_dir: Path
    port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def webhook_secret(self) -> str:
        return self.env["DARKROOM_WEBHOOK_SECRET"]

    def client(self, api_key: str = KEY_A, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, **kwargs)

    def stored_keys(self, prefix: str) -> list[str]:
        """The keys in the stack's bucket under `prefix`, read from the S3 server itself."""
        s3 = boto3.client(
            "s3",
            endpoint_url=self.env["DARKROOM_S3_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        listing = s3.list_objects_v2(Bucket=self.env["DARKROOM_S3_BUCKET"], Prefix=prefix)
        return [item["Key"] for item in listing.get("Contents", [])]

    def log_path(self, name: str) -> Path:
        return self.data_dir / f"{name}.log"

    def start(self, name: str, args: list[str], *, ready: str | None = None, env: dict[str, str] | None = None):
        log = self.log_path(name)
        offset = log.stat().st_size if log.exists() else 0  # a restart appends to the same log
        process = spawn(args, {**self.env, **(env or {})}, log)
        self.processes[name] = process
        if ready is not None:
            wait_for_log(log, ready, process, offset=offset)
        return process

    def start_worker(self, name: str = "worker", env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.start(name, ["worker"], ready=WORKER_READY, env=env)

    def kill(self, name: str) -> None:
        """SIGKILL a process and every child it made (a worker and its pool child), as the OOM
        killer or a lost host would: nothing gets to clean up."""
        process = self.processes.pop(name)
        for pid in descendants(process.pid) + [process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()

    def close(self) -> None:
        for process in self.processes.values():
            stop(process)
        dump_logs(*(self.log_path(name) for name in self.processes))
        self.processes.clear()


def start_stack(
    data_dir: Path,
    *,
    database_url: str,
    broker_url: str,
    s3_endpoint: str,
    bucket: str,
    models_dir: Path,
    overrides: dict[str, str] | None = None,
    workers: int = 1,
) -> LiveStack:
    """Migrate, then start the API, `workers` workers, the sweeper and the webhook worker."""
    from storage.db import upgrade_schema

    env = {
        **os.environ,
        "DARKROOM_DATA_DIR": str(data_dir),
        "DARKROOM_MODELS_DIR": str(models_dir),
        "DARKROOM_DATABASE_URL": database_url,
        "DARKROOM_BROKER_URL": broker_url,
        "DARKROOM_S3_BUCKET": bucket,
        "DARKROOM_S3_ENDPOINT_URL": s3_endpoint,
        "DARKROOM_S3_ACCESS_KEY_ID": "test",
        "DARKROOM_S3_SECRET_ACCESS_KEY": "test",
        "DARKROOM_API_KEYS": f"{KEY_A},{KEY_B}",
        "DARKROOM_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
        "DARKROOM_MAX_UPLOAD_PIXELS": str(1024 * 1024),
        "DARKROOM_HEARTBEAT_INTERVAL_S": "0.2",
        "DARKROOM_WORKER_HEARTBEAT_INTERVAL_S": "0.2",
        "DARKROOM_SWEEP_INTERVAL_S": "0.2",
        "DARKROOM_WEBHOOK_SECRET": new_webhook_secret(),
        "DARKROOM_WEBHOOK_ALLOW_HTTP": "true",
        "DARKROOM_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "DARKROOM_WEBHOOK_BACKOFF_BASE_S": "0.2",
        "DARKROOM_WEBHOOK_BACKOFF_MAX_S": "1",
        **(overrides or {}),
    }
    upgrade_schema(database_url)
    stack = LiveStack(env=env, data_dir=data_dir, port=free_port())
    try:
        api = stack.start("api", ["api", "--port", str(stack.port)])
        stack.start("sweeper", ["sweeper"])
        stack.start("webhooks", ["webhook-worker"], ready=WEBHOOK_READY)
        for index in range(workers):
            stack.start_worker(f"worker-{index}")
        wait_for_port(stack.port, api)
    except BaseException:
        stack.close()
        raise
    return stack

