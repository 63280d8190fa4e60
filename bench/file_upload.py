"""How much memory the API holds while a batch file as large as allowed (200 MB, 50,000 lines)
uploads through `POST /v1/files`, with the official SDK as the client.

Starts two real uvicorn API processes on the machine's Postgres: one storing to a real S3 server
process (moto, as the tests use; boto3's managed multipart upload), one to the local blob
directory. Prints, for each, the upload's time and throughput and the API process's peak RSS
(VmHWM) before and after the upload. Figures, never asserts.

    python -m bench.file_upload [--size-mb 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import openai

from bench.content import MB, peak_rss_mb
from bench.processes import free_port, make_bucket, scratch_database, spawn, start_s3_server, stop, wait_for_port
from storage.db import upgrade_schema

KEY = "sk-bench"
LINES = 50_000


def write_batch_file(path: Path, size: int) -> None:
    """`LINES` JSONL request lines of equal length adding up to `size` bytes."""
    prefix = '{"custom_id": "%05d", "method": "POST", "url": "/v1/images/generations", "body": {"prompt": "'
    padding = size // LINES - len(prefix % 0) - len('"}}\n')
    with path.open("w") as handle:
        for index in range(LINES):
            handle.write(prefix % index + "x" * padding + '"}}\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="darkroom-bench-files-"))
    batch_file = work / "requests.jsonl"
    write_batch_file(batch_file, args.size_mb * MB)
    s3, s3_endpoint = start_s3_server()
    try:
        with scratch_database("darkroom_bench_files") as database_url:
            upgrade_schema(database_url)
            env = {
                **os.environ,
                "DARKROOM_DATA_DIR": str(work),
                "DARKROOM_DATABASE_URL": database_url,
                "DARKROOM_BROKER_URL": "redis://127.0.0.1:6379/14",
                "DARKROOM_API_KEYS": KEY,
            }
            s3_env = {
                "DARKROOM_S3_BUCKET": make_bucket(s3_endpoint),
                "DARKROOM_S3_ENDPOINT_URL": s3_endpoint,
                "DARKROOM_S3_ACCESS_KEY_ID": "bench",
                "DARKROOM_S3_SECRET_ACCESS_KEY": "bench",
            }
            print(
                f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; a "
                f"{batch_file.stat().st_size / MB:.0f} MB batch file of {LINES} lines uploaded with the openai "
                "SDK; client, API and S3 server share the machine"
            )
            print(f"{'blob store':16} {'upload':>8} {'MB/s':>6} {'API peak RSS before':>20} {'after':>8}")
            for name, extra in (("S3 (moto)", s3_env), ("local directory", {})):
                measure_upload(name, env | extra, work, batch_file)
    finally:
        stop(s3)
        batch_file.unlink()


def measure_upload(name: str, env: dict[str, str], work: Path, batch_file: Path) -> None:
    """Upload `batch_file` through an API process of its own; print the time and its peak memory."""
    port = free_port()
    process = spawn(["api", "--port", str(port)], env, work / f"api-{port}.log")
    try:
        wait_for_port(port, process)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=600)
        client.files.create(file=("warm-up.jsonl", b"{}\n"), purpose="batch")  # first-request imports
        before = peak_rss_mb(process.pid)
        started = time.perf_counter()
        with batch_file.open("rb") as handle:
            created = client.files.create(file=("requests.jsonl", handle), purpose="batch")
        elapsed = time.perf_counter() - started
        print(
            f"{name:16} {elapsed:>6.1f} s {created.bytes / MB / elapsed:>6.0f} {before:>17.0f} MB "
            f"{peak_rss_mb(process.pid):>5.0f} MB"
        )
    finally:
        stop(process)


if __name__ == "__main__":
    main()
