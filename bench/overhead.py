"""`make bench`: Darkroom's own overhead per job, on this machine, with the tiny models.

Starts a production-shaped stack (the machine's Postgres and Redis, an S3 server process, uvicorn
and one Celery worker), then measures, with 1 and 32 concurrent clients:

- overhead per job: submit -> result downloadable, minus the pipeline's own time (from the job's
  stored timings) and minus the time the job waited while the single worker was busy with another
  job (that is capacity, not overhead). What remains is HTTP, validation, Postgres, the broker,
  input/output storage, encoding and polling.
- jobs accepted per second: POST /v1/videos answered 200, with 32 clients, nothing awaited.

Figures, never asserts: read them, compare them with the targets (p50 <= 30 ms, p99 <= 150 ms).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import create_engine, select

from bench.processes import (
    WORKER_READY,
    free_port,
    make_bucket,
    spawn,
    start_s3_server,
    stop,
    wait_for_log,
    wait_for_port,
)
from storage.db import upgrade_schema
from storage.models import Job

KEY = "sk-bench"
HEADERS = {"authorization": f"Bearer {KEY}"}
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
VIDEO = {"model": "tiny-wan", "prompt": "bench", "size": "16x16", "seconds": "1", "num_inference_steps": 1}
IMAGE = {"model": "tiny-qwen-image", "prompt": "bench", "size": "16x16", "num_inference_steps": 1}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run_video(client: httpx.Client, base: str) -> tuple[str, float]:
    started = time.perf_counter()
    video = client.post(f"{base}/videos", json=VIDEO).json()
    while video["status"] in ("queued", "in_progress"):
        time.sleep(0.002)
        video = client.get(f"{base}/videos/{video['id']}").json()
    assert video["status"] == "completed", video
    content = client.get(f"{base}/videos/{video['id']}/content")
    assert content.status_code == 200
    return video["id"], time.perf_counter() - started


def run_image(client: httpx.Client, base: str) -> tuple[str, float]:
    started = time.perf_counter()
    response = client.post(f"{base}/images/generations", json=IMAGE | {"response_format": "url"})
    assert response.status_code == 200, response.text
    url = response.json()["data"][0]["url"]
    assert client.get(url).status_code == 200
    return url.split("/images/")[1].split("/")[0], time.perf_counter() - started


def overheads(engine, results: list[tuple[str, float]]) -> tuple[list[float], dict[str, float]]:
    """Latency minus the pipeline's time minus the wait behind other jobs on the one worker;
    and the mean of each stage the worker timed outside the model, in ms."""
    with engine.connect() as connection:
        rows = connection.execute(select(Job).order_by(Job.started_at)).all()
    jobs = {row.id: row for row in rows}
    previous_end = {}
    last_completed = None
    for row in rows:
        previous_end[row.id] = last_completed
        last_completed = row.completed_at
    values = []
    for job_id, latency in results:
        job = jobs[job_id]
        busy_wait = 0.0
        if previous_end[job_id] is not None:
            busy_wait = max(0.0, min((previous_end[job_id] - job.created_at).total_seconds(),
                                     (job.started_at - job.created_at).total_seconds()))
        values.append(latency - job.timings["pipeline"] - busy_wait)
    measured = [jobs[job_id].timings for job_id, _ in results]
    stages = ("load_inputs", "encode_output", "upload")
    means = {stage: 1000 * sum(t[stage] for t in measured) / len(measured) for stage in stages}
    return values, means


def measure(name, job, base, engine, clients: int, jobs_per_client: int) -> None:
    results: list[tuple[str, float]] = []
    lock = threading.Lock()

    def client_loop() -> None:
        with httpx.Client(headers=HEADERS, timeout=120) as client:
            for _ in range(jobs_per_client):
                outcome = job(client, base)
                with lock:
                    results.append(outcome)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client_loop) for _ in range(clients)]:
            future.result()
    elapsed = time.perf_counter() - started
    seconds, stage_means = overheads(engine, results)
    over = [value * 1000 for value in seconds]
    latency = [value * 1000 for _, value in results]
    print(
        f"{name:6} clients={clients:<3} jobs={len(results):<4} "
        f"overhead p50={percentile(over, 50):7.1f} ms p99={percentile(over, 99):7.1f} ms | "
        f"latency p50={percentile(latency, 50):7.1f} ms p99={percentile(latency, 99):7.1f} ms | "
        f"{len(results) / elapsed:6.1f} jobs/s completed\n"
        f"       worker stages (mean ms): "
        + ", ".join(f"{stage} {value:.1f}" for stage, value in stage_means.items())
    )


def accept_rate(base: str, clients: int, total: int) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def submit(count: int) -> None:
        with httpx.Client(headers=HEADERS, timeout=60) as client:
            for _ in range(count):
                response = client.post(f"{base}/videos", json=VIDEO)
                assert response.status_code == 200, response.text
                with lock:
                    ids.append(response.json()["id"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(submit, total // clients) for _ in range(clients)]:
            future.result()
    elapsed = time.perf_counter() - started
    print(f"accept clients={clients} jobs={len(ids)}: {len(ids) / elapsed:.0f} jobs accepted/s (POST /v1/videos, 200)")
    with httpx.Client(headers=HEADERS, timeout=60) as client:
        for job_id in ids:  # cancel the backlog so the worker skips it
            client.delete(f"{base}/videos/{job_id}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40, help="jobs per measurement at 1 client")
    args = parser.parse_args()

    db_name = f"darkroom_bench_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db_name}"')
    database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
    work = Path(tempfile.mkdtemp(prefix="darkroom-bench-"))
    s3, s3_endpoint = start_s3_server()
    env = {
        **os.environ,
        "DARKROOM_DATA_DIR": str(work),
        "DARKROOM_MODELS_DIR": os.environ.get("DARKROOM_MODELS_DIR", str(Path(".darkroom/models").resolve())),
        "DARKROOM_DATABASE_URL": database_url,
        "DARKROOM_BROKER_URL": "redis://127.0.0.1:6379/14",
        "DARKROOM_S3_BUCKET": make_bucket(s3_endpoint),
        "DARKROOM_S3_ENDPOINT_URL": s3_endpoint,
        "DARKROOM_S3_ACCESS_KEY_ID": "bench",
        "DARKROOM_S3_SECRET_ACCESS_KEY": "bench",
        "DARKROOM_API_KEYS": KEY,
        "DARKROOM_LOG_LEVEL": "WARNING",
    }
    upgrade_schema(database_url)
    port = free_port()
    worker = spawn(["--log-level", "INFO", "worker"], env, work / "worker.log")
    api = spawn(["api", "--port", str(port)], env, work / "api.log")
    engine = create_engine(database_url)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_port(port, api)
        wait_for_log(work / "worker.log", WORKER_READY, worker, timeout=600)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; one worker, tiny models")
        with httpx.Client(headers=HEADERS, timeout=120) as client:  # warm-up
            for _ in range(3):
                run_video(client, base), run_image(client, base)
        for clients, per_client in ((1, args.jobs), (32, 2)):
            measure("video", run_video, base, engine, clients, per_client)
            measure("image", run_image, base, engine, clients, per_client)
        accept_rate(base, clients=32, total=640)
    finally:
        stop(api)
        stop(worker)
        stop(s3)
        engine.dispose()
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
