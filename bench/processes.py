"""Starting and stopping the processes a live Darkroom is made of: darkroom's own (API, worker),
moto's S3 server, free ports. The benchmarks start a stack with these, and so do the integration
and chaos tests: tests/ may import bench/, never the reverse, and the product imports neither.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

WORKER_READY = "worker ready: serving"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


def wait_until(
    predicate: Callable[[], object],
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
    what: str = "condition",
):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not reached within {timeout_s:g} s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs, deepest first (from /proc: Linux)."""
    children = [entry for entry in _process_ids() if _stat_fields(entry)[1:2] == [str(pid)]]
    return [grandchild for child in children for grandchild in descendants(child)] + children


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def still_running(pids: list[int]) -> list[int]:
    """Those of `pids` that have not exited (a zombie has: only its parent has not looked yet)."""
    return [pid for pid in pids if _stat_fields(pid)[:1] not in ([], ["Z"])]


def started_with(variable: str) -> list[int]:
    """The running processes whose environment, as they were started, holds `variable` ("NAME=value")."""
    wanted = variable.encode()
    found = []
    for pid in _process_ids():
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:  # gone, or another user's
            continue
        if wanted in environment:
            found.append(pid)
    return still_running(found)


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "(gone)"


def _process_ids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the parenthesised command name: state, ppid, ...; [] once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def make_bucket(endpoint: str) -> str:
    import boto3

    name = "darkroom-test-" + secrets.token_hex(4)
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    ).create_bucket(Bucket=name)
    return name


def wait_for_log(path: Path, text: str, process: subprocess.Popen, timeout: float = 180, offset: int = 0) -> None:
    """Wait until `text` appears in the log past byte `offset`; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_bytes()[offset:].decode(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"process exited ({process.returncode}):\n{path.read_text(errors='replace')[-4000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"{text!r} not seen in {path} within {timeout} s:\n{path.read_text(errors='replace')[-4000:]}")


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = log_path.open("ab")
    return subprocess.Popen([sys.executable, "-m", "darkroom.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT)


def dump_logs(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            print(f"----- {path.name} -----\n{path.read_text(errors='replace')[-6000:]}")


def start_s3_server() -> tuple[subprocess.Popen, str]:
    """moto's standalone S3 server, a separate process spoken to over HTTP."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return process, f"http://127.0.0.1:{port}"


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the machine's Postgres for one run; its SQLAlchemy URL. Dropped
    afterwards, whoever is still connected."""
    import psycopg

    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
