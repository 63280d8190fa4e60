"""`darkroom flower` against the live stack: the worker shows online, a job run through the SDK
shows as a `darkroom.generate` task whose only argument is the job id, the HTTP API refuses a
request without basic auth, and /metrics has runtime buckets long enough for GPU jobs."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import pytest

from bench.processes import dump_logs, free_port, spawn, stop, wait_for_port
from worker.celery_app import GENERATE_TASK
from worker.flower import RUNTIME_BUCKETS_S

USER, PASSWORD = "ops", "flower-test-password"
T = TypeVar("T")


def _until(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    """Poll `probe` until it returns something; fail naming `what` and the last thing seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except httpx.HTTPError as error:  # Flower still starting, or an inspect that timed out
            result, last = None, error
        if result is not None:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timeout} s; last: {last!r}")


def _wait_online(flower: httpx.Client, worker_name: str) -> None:
    """Flower marks a worker online from its heartbeat events, so this also proves its event
    receiver is connected: a job sent before that would never show."""

    def alive() -> bool | None:
        status = flower.get("/api/workers", params={"status": "true"}).raise_for_status().json()
        return True if status.get(worker_name) is True else None

    _until(f"{worker_name} online in Flower", alive)


@pytest.fixture(scope="module")
def flower(stack, tmp_path_factory) -> Iterator[httpx.Client]:
    port = free_port()
    log = tmp_path_factory.mktemp("flower") / "flower.log"
    env = {
        **stack.env,
        "DARKROOM_FLOWER_PORT": str(port),
        "DARKROOM_FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}",
    }
    process = spawn(["flower"], env, log)
    try:
        wait_for_port(port, process)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", auth=(USER, PASSWORD), timeout=10
        ) as client:
            yield client
    finally:
        stop(process)
        dump_logs(log)


@pytest.fixture(scope="module")
def worker_name(stack) -> str:
    """The name worker/main.py gives the stack's GPU worker; Flower lists it by that name."""
    return f"darkroom-{stack.processes['worker-0'].pid}@{socket.gethostname()}"


def test_the_api_refuses_a_request_without_basic_auth(flower):
    for path in ("/api/workers", "/api/tasks"):
        assert httpx.get(f"{flower.base_url}{path}").status_code == 401
        assert httpx.get(f"{flower.base_url}{path}", auth=(USER, "wrong")).status_code == 401
    assert flower.get("/api/tasks").status_code == 200


def test_the_worker_shows_online_and_a_job_shows_by_name_with_its_id_as_the_only_argument(
    flower, worker_name, client
):
    _wait_online(flower, worker_name)

    def registered() -> dict | None:
        workers = flower.get("/api/workers", params={"refresh": "true"}).raise_for_status().json()
        info = workers.get(worker_name) or {}
        return info if GENERATE_TASK in info.get("registered", []) else None

    info = _until(f"{worker_name} answering Flower's inspect with {GENERATE_TASK}", registered)
    assert "darkroom.generate.tiny-wan" in {queue["name"] for queue in info["active_queues"]}

    video = client.videos.create_and_poll(
        model="tiny-wan", prompt="watched by flower", size="32x32", seconds="1"
    )
    assert video.status == "completed"

    def finished() -> dict | None:
        tasks = (
            flower.get("/api/tasks", params={"taskname": GENERATE_TASK}).raise_for_status().json()
        )
        mine = [task for task in tasks.values() if task["args"] == repr([video.id])]
        return next((task for task in mine if task["state"] == "SUCCESS"), None)

    task = _until(f"{GENERATE_TASK} for {video.id} in state SUCCESS", finished)
    assert (task["name"], task["worker"], task["kwargs"]) == (GENERATE_TASK, worker_name, "{}")
    assert task["runtime"] > 0


def test_metrics_have_runtime_buckets_up_to_half_an_hour(flower, worker_name, client):
    _wait_online(flower, worker_name)
    client.videos.create_and_poll(
        model="tiny-wan", prompt="timed by flower", size="32x32", seconds="1"
    )
    pattern = re.compile(
        r'^flower_task_runtime_seconds_bucket\{le="([^"]+)",task="'
        + re.escape(GENERATE_TASK)
        + r'",worker="'
        + re.escape(worker_name)
        + r'"\} (\S+)$',
        re.MULTILINE,
    )

    def buckets() -> dict[str, float] | None:
        # /metrics is not behind Flower's auth (Prometheus scrapes it plainly); send none.
        text = httpx.get(f"{flower.base_url}/metrics").raise_for_status().text
        found = {le: float(count) for le, count in pattern.findall(text)}
        return found if found.get("+Inf", 0) >= 1 else None

    found = _until(f"a runtime histogram for {GENERATE_TASK} on /metrics", buckets)
    bounds = [float(le) for le in found if le != "+Inf"]
    assert bounds == [float(bucket) for bucket in RUNTIME_BUCKETS_S]
    # A tiny job takes well under half an hour: it is counted in the 1800 s bucket, not only +Inf.
    assert found["1800.0"] == found["+Inf"] >= 1
