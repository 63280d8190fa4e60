"""Webhooks through the live stack: a job's terminal event reaches a real receiver on a local port,
signed so the official SDK's `client.webhooks.unwrap` accepts it, retried through the sweeper and
the webhook worker while the receiver fails, stopped by 410 Gone, and listed with every attempt
by `GET /v1/{videos,images}/{id}/events`. Submission refuses webhook URLs it must not call."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from tests.integration.conftest import KEY_A, KEY_B


@dataclass
class Received:
    at: float  # time.monotonic()
    headers: dict[str, str]
    body: bytes


@dataclass
class Hook:
    """A receiver that answers each POST with the next of `statuses` (the last one repeats)."""

    statuses: list[int]
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        hook = self
        self.path = f"/darkroom-hook/{secrets.token_hex(8)}"

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.path != hook.path:
                    # An earlier test's event, still retrying, that found this reused port.
                    self.send_response(410)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                hook.received.append(
                    Received(
                        time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                self.send_response(hook.statuses[min(len(hook.received), len(hook.statuses)) - 1])
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    def wait_for(self, count: int, timeout: float = 120) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.received)} of {count} deliveries within {timeout} s"
            )
            time.sleep(0.05)
        return list(self.received)


@pytest.fixture
def hooks() -> Iterator[Callable[..., Hook]]:
    started: list[Hook] = []

    def start(*statuses: int) -> Hook:
        started.append(Hook(list(statuses)))
        return started[-1]

    yield start
    for hook in started:
        hook.server.shutdown()
        hook.server.server_close()


def _events(stack, resource: str, job_id: str, key: str = KEY_A) -> httpx.Response:
    return httpx.get(
        f"{stack.base_url}/{resource}/{job_id}/events", headers={"authorization": f"Bearer {key}"}
    )


def _event_when(stack, resource: str, job_id: str, status: str, timeout: float = 60) -> dict:
    """The job's one event, once its delivery reached `status`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = _events(stack, resource, job_id)
        assert answer.status_code == 200, answer.text
        events = answer.json()["data"]
        if events and events[0]["delivery"]["status"] == status:
            [event] = events
            return event
        assert time.monotonic() < deadline, (
            f"no {status} event for {job_id} within {timeout} s: {events}"
        )
        time.sleep(0.1)


def _create_video(client: openai.OpenAI, webhook_url: str, prompt: str = "a heron lands"):
    return client.videos.create(
        model="tiny-wan",
        prompt=prompt,
        size="32x32",
        seconds="1",
        extra_body={"webhook_url": webhook_url, "num_inference_steps": 2},
    )


def test_a_finished_video_sends_video_completed_that_the_sdk_verifies(stack, client, hooks):
    hook = hooks(200)
    video = _create_video(client, hook.url)
    [delivery] = hook.wait_for(1)

    event = client.webhooks.unwrap(delivery.body, delivery.headers, secret=stack.webhook_secret)
    assert (event.type, event.data.id, event.object) == ("video.completed", video.id, "event")
    assert delivery.headers["webhook-id"] == event.id and event.id.startswith("evt_")
    assert client.videos.retrieve(video.id).status == "completed"
    listed = _event_when(stack, "videos", video.id, "delivered")
    assert (listed["id"], listed["type"], listed["delivery"]["attempts"]) == (
        event.id,
        "video.completed",
        1,
    )


def test_a_receiver_down_for_five_attempts_gets_the_event_once_on_the_sixth(stack, client, hooks):
    hook = hooks(500, 500, 500, 500, 500, 200)
    submitted = time.monotonic()
    video = _create_video(client, hook.url, prompt="a receiver that is down")
    received = hook.wait_for(6)
    listed = _event_when(stack, "videos", video.id, "delivered")
    time.sleep(1.5)  # longer than the largest backoff (1 s) plus a sweep: nothing more comes

    assert len(hook.received) == 6
    assert {delivery.headers["webhook-id"] for delivery in received} == {listed["id"]}
    for delivery in received:
        client.webhooks.verify_signature(
            delivery.body, delivery.headers, secret=stack.webhook_secret
        )
    history = listed["delivery"]["history"]
    assert [(row["attempt"], row["status_code"]) for row in history] == [
        (n, 500) for n in range(1, 6)
    ] + [(6, 200)]
    assert (listed["delivery"]["attempts"], listed["delivery"]["next_attempt_at"]) == (6, None)
    assert all(row["latency_ms"] is not None and row["error"] is None for row in history)

    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(received)]
    print(
        f"\nwebhook fault test: {len(received)} attempts (5 x 500, then 200); first attempt to delivery "
        f"{received[-1].at - received[0].at:.2f} s; submit to delivery {received[-1].at - submitted:.2f} s; "
        f"gaps {', '.join(f'{gap:.2f}' for gap in gaps)} s (backoff base 0.2 s, cap 1 s; sweep every 0.2 s)"
    )


def test_410_gone_stops_delivery_after_one_request(stack, client, hooks):
    hook = hooks(410)
    video = _create_video(client, hook.url, prompt="a receiver that is gone")
    hook.wait_for(1)
    listed = _event_when(stack, "videos", video.id, "gone")
    time.sleep(1.5)
    assert len(hook.received) == 1
    assert [row["status_code"] for row in listed["delivery"]["history"]] == [410]


def test_an_image_generation_sends_image_completed(stack, client, hooks):
    hook = hooks(200)
    client.images.generate(
        model="tiny-qwen-image",
        prompt="a lighthouse at dusk",
        size="64x48",
        extra_body={"webhook_url": hook.url, "num_inference_steps": 2},
    )
    [delivery] = hook.wait_for(1)
    event = client.webhooks.unwrap(delivery.body, delivery.headers, secret=stack.webhook_secret)
    assert event.type == "image.completed" and event.data.id.startswith("img_")
    listed = _event_when(stack, "images", event.data.id, "delivered")
    assert listed["id"] == event.id


def test_another_keys_job_events_are_not_found(stack, client):
    video = client.videos.create(model="tiny-wan", prompt="mine", size="32x32", seconds="1")
    assert _events(stack, "videos", video.id).json() == {"object": "list", "data": []}
    for answer in (
        _events(stack, "videos", video.id, key=KEY_B),
        _events(stack, "videos", "video_unknown"),
    ):
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/x", "https://10.0.0.1/x"])
def test_submission_refuses_a_webhook_url_it_must_not_call(spawn_api, url):
    base_url = spawn_api(
        {"DARKROOM_WEBHOOK_ALLOWED_HOSTS": "", "DARKROOM_WEBHOOK_ALLOW_HTTP": "false"}
    )
    strict = openai.OpenAI(base_url=base_url, api_key=KEY_A, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        _create_video(strict, url)
    assert (refused.value.param, refused.value.code) == ("webhook_url", "invalid_webhook_url")
    assert "DARKROOM_WEBHOOK_" in refused.value.message


def test_submission_refuses_webhooks_when_no_secret_is_configured(spawn_api, hooks):
    base_url = spawn_api({"DARKROOM_WEBHOOK_SECRET": ""})
    unsigned = openai.OpenAI(base_url=base_url, api_key=KEY_A, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        _create_video(unsigned, hooks(200).url)
    assert (refused.value.param, refused.value.code) == ("webhook_url", "webhooks_not_configured")
