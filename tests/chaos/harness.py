"""What the fault tests share: the scale knob, a read-only view of the test's own jobs table, the output sets in S3,
the worker logs, and the one-line figures each test prints.

Every test runs against its own stack, so nothing here touches the machine's shared services
beyond creating (and dropping) one database on them.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.exc import SQLAlchemyError

from bench.processes import wait_until
from storage.models import Job
from tests.chaos.servers import s3_client
from tests.stack import LiveStack

TERMINAL = ("completed", "failed", "cancelled")

# ---------------------------------------------------------------------------------------------
# Scale


SCALE = os.environ.get("DARKROOM_CHAOS_SCALE", "small")
if SCALE not in ("small", "full"):
    raise ValueError(f"DARKROOM_CHAOS_SCALE must be 'small' or 'full', not {SCALE!r}")
FULL = SCALE == "full"


def by_scale(small, full):
    """The small figure in CI (`make test`), the issue's figure under `make chaos`."""
    return full if FULL else small


# ---------------------------------------------------------------------------------------------
# Figures


def report(test: str, **figures) -> str:
    """Print one line of figures (pytest -s shows it) and append it to $DARKROOM_CHAOS_REPORT."""
    line = f"CHAOS [{SCALE}] {test}: " + " ".join(
        f"{name}={_fmt(value)}" for name, value in figures.items()
    )
    print("\n" + line, flush=True)
    path = os.environ.get("DARKROOM_CHAOS_REPORT")
    if path:
        with open(path, "a") as handle:
            handle.write(line + "\n")
    return line


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def percentile(values: Iterable[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# Looking at the outcome


def output_sets(endpoint: str, bucket: str) -> dict[str, set[str]]:
    """job id -> the attempt prefixes it has outputs under (`outputs/<id>/<attempt>/...`)."""
    sets: dict[str, set[str]] = defaultdict(set)
    paginator = s3_client(endpoint).get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix="outputs/"):
        for item in page.get("Contents", []):
            parts = item["Key"].split("/")
            # outputs/<id>/<attempt>/<file>; a flat outputs/<id>/<file> counts as one set.
            sets[parts[1]].add(parts[2] if len(parts) >= 4 else "")
    return sets


def missing_outputs(endpoint: str, bucket: str, rows: Iterable[JobRow]) -> dict[str, list[str]]:
    """Completed jobs whose recorded output keys are not in the bucket (or that record none)."""
    client = s3_client(endpoint)
    missing: dict[str, list[str]] = {}
    for row in rows:
        if row.status != "completed":
            continue
        absent = [] if row.output_keys else ["<no output keys recorded>"]
        for key in row.output_keys:
            try:
                client.head_object(Bucket=bucket, Key=key)
            except client.exceptions.ClientError:
                absent.append(key)
        if absent:
            missing[row.id] = absent
    return missing


_COMPLETED_LINE = re.compile(r"\bjob (\S+) completed:")


def completions_in_logs(stack: LiveStack) -> Counter[str]:
    """How many times each job id was logged `job <id> completed` across every worker's log
    (a restarted worker appends to its predecessor's log)."""
    counts: Counter[str] = Counter()
    for path in stack.data_dir.glob("worker-*.log"):
        counts.update(_COMPLETED_LINE.findall(path.read_text(errors="replace")))
    return counts


def count_in_logs(stack: LiveStack, pattern: str, names: str = "*") -> int:
    regex = re.compile(pattern)
    return sum(
        len(regex.findall(path.read_text(errors="replace")))
        for path in stack.data_dir.glob(f"{names}.log")
    )


@dataclass(frozen=True)
class JobRow:
    id: str
    status: str
    attempts: int
    progress: int
    worker: str | None
    error_code: str | None
    output_keys: list[str]
    created_at: datetime
    completed_at: datetime | None
    heartbeat_at: datetime | None
    timings: dict


class JobBook:
    """Read-only looks at the test's own `jobs` table (the database holds only this test's jobs)."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url, pool_pre_ping=True, pool_size=2)

    def rows(self, ids: Iterable[str] | None = None) -> dict[str, JobRow]:
        query = select(
            Job.id,
            Job.status,
            Job.attempts,
            Job.progress,
            Job.worker,
            Job.error_code,
            Job.output_keys,
            Job.created_at,
            Job.completed_at,
            Job.heartbeat_at,
            Job.timings,
        )
        if ids is not None:
            query = query.where(Job.id.in_(list(ids)))
        with self.engine.connect() as connection:
            return {row.id: JobRow(**row._mapping) for row in connection.execute(query)}

    def wait_terminal(
        self, ids: Iterable[str], timeout_s: float, interval_s: float = 0.25
    ) -> dict[str, JobRow]:
        """Wait until every job is terminal or the time is up; the rows as last seen."""
        ids = list(ids)
        deadline = time.monotonic() + timeout_s
        rows: dict[str, JobRow] = {}
        while True:
            try:
                rows = self.rows(ids)
            except SQLAlchemyError:
                pass  # a test that restarts Postgres looks again
            if len(rows) == len(ids) and all(row.status in TERMINAL for row in rows.values()):
                return rows
            if time.monotonic() > deadline:
                return rows
            time.sleep(interval_s)

    def dispose(self) -> None:
        self.engine.dispose()


def calibrate_steps(
    client, book: JobBook, *, target_s: float, size: str = "32x32", probe_steps: int = 10
) -> int:
    """How many denoising steps of tiny-wan at `size` take about `target_s` on this machine now,
    measured with one job (its `model.denoise` timing)."""
    video = client.videos.create(
        model="tiny-wan",
        prompt="calibration",
        size=size,
        seconds="1",
        extra_body={"num_inference_steps": probe_steps, "seed": 1},
    )
    row = book.wait_terminal([video.id], timeout_s=120)[video.id]
    assert row.status == "completed", f"the calibration job ended {row.status} ({row.error_code})"
    per_step = row.timings["model.denoise"] / probe_steps
    return max(3, min(200, round(target_s / per_step)))


def submit_denoising(client, book: JobBook, *, prompt: str, count: int, steps: int) -> list[str]:
    """Submit `count` tiny-wan jobs of `steps` steps and return their ids once one of them is
    past its first denoising step, so that what the test breaks next breaks a running job."""
    accepted = [
        client.videos.create(
            model="tiny-wan",
            prompt=f"{prompt} {index}",
            size="32x32",
            seconds="1",
            extra_body={"num_inference_steps": steps, "seed": index},
        ).id
        for index in range(count)
    ]
    wait_until(
        lambda: any(
            row.status == "in_progress" and row.progress > 0 for row in book.rows(accepted).values()
        ),
        timeout_s=60,
        what="a job denoising",
    )
    return accepted


# ---------------------------------------------------------------------------------------------
# Processes


def worker_name_of(stack: LiveStack, worker_id: str | None) -> str | None:
    """The LiveStack worker whose Celery parent process runs the pool child `host:pid`."""
    if not worker_id:
        return None
    try:
        pid = int(worker_id.rsplit(":", 1)[1])
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ValueError, IndexError, OSError):
        return None
    parent = int(stat.rsplit(")", 1)[1].split()[1])
    for name, process in stack.processes.items():
        if name.startswith("worker") and process.pid == parent and process.poll() is None:
            return name
    return None


def shut_down(stack: LiveStack) -> None:
    """End a chaos stack quickly: workers are killed (nothing of theirs outlives the test's
    database), the rest stopped with SIGTERM, all at once."""
    for name in [name for name in stack.processes if name.startswith("worker")]:
        stack.kill(name)
    processes = list(stack.processes.values())
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    stack.processes.clear()
