"""`make bench`, part two: how long `/content` takes to serve a 50 MB object, on this machine.

Stores the object in a real S3 server process (moto, as the tests use), records a completed video
job pointing at it in the machine's Postgres, and serves it through two real uvicorn API processes:
one streaming (the default) and one with `DARKROOM_CONTENT_REDIRECT=true`. For each way of asking
it prints the median over N runs of the time to the first body byte and to the last one, with a
direct GET from the S3 server as the floor, and the streaming API's peak memory.

Figures, never asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg

from bench.processes import free_port, make_bucket, spawn, start_s3_server, stop, wait_for_port
from darkroom.keys import owner_of_key
from darkroom.settings import Settings
from storage import jobs
from storage.blobs import make_blob_store
from storage.db import make_engine, make_session_factory, upgrade_schema
from storage.models import JobKind

KEY = "sk-bench"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MB = 1024 * 1024


@dataclass
class Timing:
    first_byte_s: float
    total_s: float
    status: int
    size: int


def timed_get(client: httpx.Client, url: str, headers: dict[str, str]) -> Timing:
    started = time.perf_counter()
    first_byte = None
    size = 0
    with client.stream("GET", url, headers=headers) as response:
        for chunk in response.iter_raw():
            if first_byte is None:
                first_byte = time.perf_counter()
            size += len(chunk)
    finished = time.perf_counter()
    return Timing((first_byte or finished) - started, finished - started, response.status_code, size)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def store_video(settings: Settings, data: bytes) -> str:
    """A completed video job whose output is `data`, made through the job state machine."""
    key = "outputs/bench/1/video.mp4"
    make_blob_store(settings).put(key, data, "video/mp4")
    engine = make_engine(settings.resolved_database_url)
    sessions = make_session_factory(engine)
    job_id = jobs.new_job_id(JobKind.VIDEO)
    with sessions() as session:
        jobs.create(session, job_id=job_id, kind=JobKind.VIDEO, model="tiny-wan", owner=owner_of_key(KEY), params={})
        session.commit()
        jobs.claim(session, job_id, "bench")
        jobs.complete(
            session, job_id, output_keys=[key], output_meta={}, timings={}, retention=timedelta(days=1)
        )
    engine.dispose()
    return job_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="runs per measurement (the median is printed)")
    parser.add_argument("--size-mb", type=int, default=50)
    args = parser.parse_args()

    db_name = f"darkroom_bench_content_{os.getpid()}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db_name}"')
    database_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
    work = Path(tempfile.mkdtemp(prefix="darkroom-bench-content-"))
    s3, s3_endpoint = start_s3_server()
    settings = Settings(
        data_dir=work,
        database_url=database_url,
        s3_bucket=make_bucket(s3_endpoint),
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="bench",
        s3_secret_access_key="bench",
    )
    env = {
        **os.environ,
        "DARKROOM_DATA_DIR": str(work),
        "DARKROOM_DATABASE_URL": database_url,
        "DARKROOM_BROKER_URL": "redis://127.0.0.1:6379/14",
        "DARKROOM_S3_BUCKET": settings.s3_bucket,
        "DARKROOM_S3_ENDPOINT_URL": s3_endpoint,
        "DARKROOM_S3_ACCESS_KEY_ID": "bench",
        "DARKROOM_S3_SECRET_ACCESS_KEY": "bench",
        "DARKROOM_API_KEYS": KEY,
        "DARKROOM_LOG_LEVEL": "WARNING",
    }
    upgrade_schema(database_url)
    size = args.size_mb * MB
    data = os.urandom(size)
    job_id = store_video(settings, data)
    direct_url = make_blob_store(settings).presigned_url("outputs/bench/1/video.mp4", 3600)
    del data

    apis = {}
    for name, extra in (("stream", {}), ("redirect", {"DARKROOM_CONTENT_REDIRECT": "true"})):
        port = free_port()
        apis[name] = (spawn(["api", "--port", str(port)], env | extra, work / f"api-{name}.log"), port)
    try:
        for process, port in apis.values():
            wait_for_port(port, process)
        auth = {"authorization": f"Bearer {KEY}"}
        middle = size // 2 - MB // 2
        one_mb = {"range": f"bytes={middle}-{middle + MB - 1}"}

        def api_url(name: str) -> str:
            return f"http://127.0.0.1:{apis[name][1]}/v1/videos/{job_id}/content"

        cases = [
            ("S3 directly (floor)", "full", direct_url, {}),
            ("S3 directly (floor)", "1 MB range", direct_url, one_mb),
            ("API, streaming", "full", api_url("stream"), auth),
            ("API, streaming", "1 MB range", api_url("stream"), auth | one_mb),
            ("API, redirect (307 + S3)", "full", api_url("redirect"), auth),
            ("API, redirect (307 + S3)", "1 MB range", api_url("redirect"), auth | one_mb),
        ]
        stream_pid = apis["stream"][0].pid
        rss_before = peak_rss_mb(stream_pid)
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
            f"{args.size_mb} MB object in moto's S3 server; median of {args.runs} runs; "
            "client, API and S3 server share the machine"
        )
        print(f"{'path':26} {'request':11} {'status':>6} {'bytes':>10} {'first byte':>11} {'total':>9} {'MB/s':>7}")
        with httpx.Client(timeout=120, follow_redirects=True) as client:
            for label, what, url, headers in cases:
                timed_get(client, url, headers)  # warm-up: connections, first-request imports
                runs = [timed_get(client, url, headers) for _ in range(args.runs)]
                first = statistics.median(run.first_byte_s for run in runs) * 1000
                total = statistics.median(run.total_s for run in runs) * 1000
                last = runs[-1]
                print(
                    f"{label:26} {what:11} {last.status:>6} {last.size:>10} {first:>8.1f} ms "
                    f"{total:>6.1f} ms {last.size / MB / (total / 1000):>7.0f}"
                )
        print(
            f"streaming API peak RSS: {rss_before:.0f} MB before serving, "
            f"{peak_rss_mb(stream_pid):.0f} MB after {2 * (args.runs + 1)} downloads of the {args.size_mb} MB object"
        )
    finally:
        for process, _ in apis.values():
            stop(process)
        stop(s3)
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
