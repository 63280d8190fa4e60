"""What hostile requests cost the API: memory for oversized bodies, event-loop time for a data: URL
of millions of parameters, and whether `/health` answers while slow image URLs are fetched.

Starts a fresh uvicorn API process (embedded: SQLite, local blobs) for each case and prints its
answer, how long it took, and the API's peak RSS (VmHWM) before and after:

- a 150 MB JSON body, with a Content-Length, then chunked;
- a chunked multipart body of eight 25 MB text fields;
- a 20 MB `data:` URL of `;x` parameters, with a `/health` request sent while it is handled;
- 50 `input_reference[image_url]`s at once on a host that drips its headers a byte a second,
  and how long `/health` takes meanwhile.

Figures, never asserts. Run it on two checkouts to compare them.

    python -m bench.hostile_bodies
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from bench.content import peak_rss_mb
from bench.processes import free_port, spawn, stop, wait_for_port
from storage.db import upgrade_schema

KEY = "sk-bench"
MB = 1024 * 1024
AUTH = {"authorization": f"Bearer {KEY}"}


@contextmanager
def api(work: Path, **settings: str) -> Iterator[tuple[str, int]]:
    data_dir = Path(tempfile.mkdtemp(dir=work))
    upgrade_schema(f"sqlite:///{data_dir / 'darkroom.db'}")
    env = {**os.environ, "DARKROOM_DATA_DIR": str(data_dir), "DARKROOM_API_KEYS": KEY, **settings}
    port = free_port()
    process = spawn(["api", "--port", str(port)], env, data_dir / "api.log")
    try:
        wait_for_port(port, process)
        httpx.get(f"http://127.0.0.1:{port}/health").raise_for_status()
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        stop(process)


def chunked(body: bytes, size: int = 1 * MB) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def send(base: str, pid: int, label: str, **request) -> None:
    before = peak_rss_mb(pid)
    started = time.perf_counter()
    try:
        response = httpx.post(f"{base}/v1/videos", headers={**AUTH, **request.pop("headers", {})}, timeout=300, **request)
        answer = f"{response.status_code} {response.json()['error']['code'] if response.is_error else ''}"
    except httpx.HTTPError as error:
        answer = type(error).__name__
    took = time.perf_counter() - started
    print(f"{label:48s} {answer:28s} {took:6.2f} s   peak RSS {before:6.0f} -> {peak_rss_mb(pid):6.0f} MB")


def multipart_of_text_fields(fields: int, size: int) -> tuple[bytes, str]:
    boundary = "darkroom-bench"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n'.encode()]
    for index in range(fields):
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="negative_prompt{index}"\r\n\r\n'
        parts.append(head.encode() + b"y" * size + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def loop_stall(base: str, pid: int) -> None:
    url = "data:image/png" + ";x" * (10 * MB)  # 20 MB, no comma
    body = {"prompt": "x", "model": "tiny-wan-i2v", "input_reference": {"image_url": url}}
    health_took: list[float] = []

    def health_while_it_runs() -> None:
        time.sleep(0.5)  # the hostile body is sent and being read by then
        started = time.perf_counter()
        httpx.get(f"{base}/health", timeout=120)
        health_took.append(time.perf_counter() - started)

    probe = threading.Thread(target=health_while_it_runs)
    probe.start()
    send(base, pid, "20 MB data: URL of ';x' parameters", json=body)
    probe.join()
    print(f"{'  /health sent meanwhile answered in':48s} {'':28s} {health_took[0]:6.2f} s")


@contextmanager
def dripping_host() -> Iterator[str]:
    """An image host that sends its status line and headers a byte a second: a URL to it."""

    class Drip(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.close_connection = True
            for byte in b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 0\r\n\r\n":
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(1)

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/image.png"
    finally:
        server.shutdown()
        server.server_close()


def slow_fetches(base: str, pid: int, url: str) -> None:
    body = {"prompt": "x", "model": "tiny-wan-i2v", "input_reference": {"image_url": url}}
    answers: list[str] = []

    def one(_index: int) -> None:
        try:
            answers.append(str(httpx.post(f"{base}/v1/videos", json=body, headers=AUTH, timeout=300).status_code))
        except httpx.HTTPError as error:
            answers.append(type(error).__name__)

    with ThreadPoolExecutor(50) as pool:
        pool.map(one, range(50))
        time.sleep(2)
        started = time.perf_counter()
        try:
            health = str(httpx.get(f"{base}/health", timeout=60).status_code)
        except httpx.HTTPError as error:
            health = type(error).__name__
        print(f"{'50 image URLs dripping headers: /health':48s} {health:28s} {time.perf_counter() - started:6.2f} s")
    counts = {answer: answers.count(answer) for answer in sorted(set(answers))}
    print(f"{'  the 50 fetches answered':48s} {counts}   peak RSS {peak_rss_mb(pid):6.0f} MB")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="darkroom-bench-hostile-"))
    big_json = b'{"prompt": "' + b"x" * (150 * MB) + b'"}'
    json_headers = {"content-type": "application/json"}
    with api(work) as (base, pid):
        send(base, pid, "150 MB JSON, Content-Length", content=big_json, headers=json_headers)
    with api(work) as (base, pid):
        send(base, pid, "150 MB JSON, chunked", content=chunked(big_json), headers=json_headers)
    form, content_type = multipart_of_text_fields(8, 25 * MB)
    with api(work) as (base, pid):
        send(base, pid, "multipart, chunked, 8 text fields of 25 MB", content=chunked(form), headers={"content-type": content_type})
    with api(work) as (base, pid):
        loop_stall(base, pid)
    local = {"DARKROOM_IMAGE_URL_ALLOW_HTTP": "true", "DARKROOM_IMAGE_URL_ALLOWED_HOSTS": "127.0.0.1"}
    with dripping_host() as url, api(work, **local) as (base, pid):
        slow_fetches(base, pid, url)


if __name__ == "__main__":
    main()
