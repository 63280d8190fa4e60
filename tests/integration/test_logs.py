"""Request ids and structured logs on the live stack, through the official SDK: the SDK sees the
server's `x-request-id` on errors and objects, a client's own id comes back, and the API's and the
worker's log files are JSON lines carrying that request id and that job id."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest

SERVER_ID = re.compile(r"req_[0-9a-f]{24}")
CORE_FIELDS = {"ts", "level", "logger", "message"}


def _lines(path: Path) -> list[dict]:
    """Every line of a service's log as JSON; any line that is not fails the test, naming it."""
    parsed = []
    for number, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            pytest.fail(f"{path.name} line {number} is not JSON: {text[:300]!r}")
        assert isinstance(line, dict) and CORE_FIELDS <= line.keys(), (
            f"{path.name} line {number}: {text[:300]}"
        )
        parsed.append(line)
    return parsed


def _wait_for_line(paths: list[Path], wanted: Callable[[dict], bool], timeout: float = 30) -> dict:
    """A line is written just after the state it reports: poll the files, to a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        for path in paths:
            if path.exists():
                for line in _lines(path):
                    if wanted(line):
                        return line
        if time.monotonic() > deadline:
            pytest.fail(f"no matching line in {[path.name for path in paths]} within {timeout} s")
        time.sleep(0.1)


@pytest.fixture
def receiver() -> Iterator[str]:
    """A webhook endpoint that accepts everything: the delivery is what gets logged."""

    class Accept(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_a_bad_requests_error_carries_the_servers_request_id(client):
    with pytest.raises(openai.BadRequestError) as bad:
        client.videos.create(model="tiny-wan", prompt="")
    assert SERVER_ID.fullmatch(bad.value.request_id)
    assert bad.value.request_id == bad.value.response.headers["x-request-id"]
    assert (bad.value.param, bad.value.code) == ("prompt", "invalid_value")  # still OpenAI-shaped

    with pytest.raises(openai.NotFoundError) as missing:
        client.videos.retrieve("video_does_not_exist")
    assert SERVER_ID.fullmatch(missing.value.request_id)
    assert missing.value.request_id != bad.value.request_id


def test_a_clients_own_request_id_comes_back(client):
    sent = f"trace-{secrets.token_hex(6)}.1"
    with pytest.raises(openai.BadRequestError) as bad:
        client.videos.create(model="tiny-wan", prompt="", extra_headers={"x-request-id": sent})
    assert bad.value.request_id == sent

    models = client.models.with_raw_response.list(
        extra_headers={"x-request-id": "has spaces in it"}
    )
    assert SERVER_ID.fullmatch(models.request_id)  # not a sane token: the server made its own


def test_the_logs_carry_the_request_and_job_ids(client, stack, receiver):
    request_id = f"logs-{secrets.token_hex(8)}"
    video = client.videos.create(
        model="tiny-wan",
        prompt="logged",
        size="32x32",
        seconds="1",
        extra_headers={"x-request-id": request_id},
        extra_body={"webhook_url": receiver},
    )
    assert video._request_id == request_id

    deadline = time.monotonic() + 120
    while (video := client.videos.retrieve(video.id)).status not in ("completed", "failed"):
        assert time.monotonic() < deadline, f"{video.id} still {video.status} after 120 s"
        time.sleep(0.1)
    assert video.status == "completed"

    access = _wait_for_line(
        [stack.log_path("api")],
        lambda line: (
            line.get("request_id") == request_id and line["logger"] == "darkroom.api.access"
        ),
    )
    assert (access["method"], access["path"], access["status"], access["level"]) == (
        "POST",
        "/v1/videos",
        200,
        "INFO",
    )
    assert isinstance(access["duration_ms"], float)

    workers = sorted(stack.data_dir.glob("worker-*.log"))
    completed = _wait_for_line(
        workers, lambda line: line.get("job_id") == video.id and "completed" in line["message"]
    )
    assert completed["logger"] == "darkroom.worker"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", completed["ts"])
    # The job's own thread logs these; its watch thread, which does not carry the id, logs only
    # on trouble.
    job_lines = [line for path in workers for line in _lines(path) if video.id in line["message"]]
    assert job_lines and all(
        line.get("job_id") == video.id for line in job_lines if line["logger"] == "darkroom.worker"
    )

    delivery = _wait_for_line(
        [stack.log_path("webhooks")],
        lambda line: line.get("job_id") == video.id and line["logger"] == "darkroom.webhooks",
    )
    assert delivery["event_id"].startswith("evt_") and "204" in delivery["message"]


def test_every_service_log_line_is_json(stack):
    """Celery's own lines, uvicorn's and the sweeper's included; the start-up banner is not printed."""
    names = [
        "api",
        "sweeper",
        "webhooks",
        *(path.stem for path in stack.data_dir.glob("worker-*.log")),
    ]
    loggers = set()
    for name in names:
        lines = _lines(stack.log_path(name))
        assert lines, f"{name}.log is empty"
        loggers |= {line["logger"] for line in lines}
    assert {
        "celery.worker.consumer.connection",
        "celery.apps.worker",
    } & loggers  # Celery's, as JSON
    assert "darkroom.worker" in loggers and "darkroom.webhooks" in loggers
