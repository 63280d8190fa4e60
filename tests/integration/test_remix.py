"""Remix through the official SDK: a completed video's parameters with a new prompt, as a new job
that says where it came from; the same prompt reproduces the source byte for byte; sources that
are not completed, not the caller's or gone are refused; Idempotency-Key replays."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from openai.types import Video

from tests.integration.conftest import KEY_A


@pytest.fixture(scope="module")
def source(stack) -> Video:
    """One small completed video that the tests here remix (remixing never changes it)."""
    video = stack.client(KEY_A).videos.create_and_poll(
        model="tiny-wan",
        prompt="a red fox in snow",
        size="32x16",
        seconds="1",
        poll_interval_ms=50,
        extra_body={"seed": 1234, "num_inference_steps": 2, "negative_prompt": "blurry"},
    )
    assert video.status == "completed", video.error
    return video


def _remix_and_wait(client: openai.OpenAI, video_id: str, prompt: str, **kwargs) -> Video:
    remix = client.videos.remix(video_id, prompt=prompt, **kwargs)
    assert (remix.status, remix.remixed_from_video_id) == ("queued", video_id)
    return client.videos.poll(remix.id, poll_interval_ms=50)


def test_a_remix_keeps_the_source_parameters_with_the_new_prompt(client, source):
    remix = _remix_and_wait(client, source.id, "a blue fox in snow")
    assert (remix.status, remix.error, remix.remixed_from_video_id) == ("completed", None, source.id)
    assert remix.id != source.id and remix.prompt == "a blue fox in snow"
    assert (remix.model, remix.size, remix.seconds) == (source.model, source.size, source.seconds)
    assert client.videos.retrieve(remix.id).remixed_from_video_id == source.id
    listed = {video.id: video for video in client.videos.list(limit=100)}
    assert listed[remix.id].remixed_from_video_id == source.id
    assert listed[source.id].remixed_from_video_id is None
    # Another prompt is another video; the source's own is not touched.
    assert client.videos.download_content(remix.id).read() != client.videos.download_content(source.id).read()
    assert client.videos.retrieve(source.id).prompt == "a red fox in snow"


def test_the_same_prompt_reproduces_the_source_byte_for_byte(client, source):
    # The remix reruns the source's recorded seed, steps and negative prompt on the CPU.
    remix = _remix_and_wait(client, source.id, source.prompt)
    assert remix.status == "completed"
    assert client.videos.download_content(remix.id).read() == client.videos.download_content(source.id).read()


def test_a_remix_of_a_remix_points_at_its_direct_source(client, source):
    first = _remix_and_wait(client, source.id, "a fox at dusk")
    second = _remix_and_wait(client, first.id, "a fox at night")
    assert (second.status, second.remixed_from_video_id, second.prompt) == ("completed", first.id, "a fox at night")
    assert (second.size, second.seconds) == (source.size, source.seconds)


def test_a_source_still_queued_or_running_is_refused(client):
    slow = client.videos.create(
        model="tiny-wan", prompt="slow", size="256x256", seconds="8", extra_body={"num_inference_steps": 50}
    )
    try:
        with pytest.raises(openai.BadRequestError) as error:
            client.videos.remix(slow.id, prompt="too soon")
        assert (error.value.code, error.value.param) == ("video_not_completed", "video_id")
        status = client.videos.retrieve(slow.id).status
        assert status in ("queued", "in_progress") and "only a completed video" in error.value.message
    finally:
        client.videos.delete(slow.id)  # frees the worker for the next test


def test_another_key_deleted_or_unknown_source_is_not_found(client, other_client, source):
    with pytest.raises(openai.NotFoundError) as not_theirs:
        other_client.videos.remix(source.id, prompt="mine now")
    assert (not_theirs.value.code, not_theirs.value.param) == ("not_found", "video_id")

    deleted = _remix_and_wait(client, source.id, "soon deleted")
    client.videos.delete(deleted.id)
    for video_id in (deleted.id, "video_does_not_exist"):
        with pytest.raises(openai.NotFoundError):
            client.videos.remix(video_id, prompt="gone")


@pytest.mark.parametrize(
    "body,param,code",
    [
        ({"prompt": ""}, "prompt", "invalid_value"),
        ({"prompt": " \n "}, "prompt", "invalid_value"),
        ({}, "prompt", "missing_required_parameter"),
        ({"prompt": "x", "seed": 7}, "seed", "unknown_parameter"),
        ({"prompt": "x", "size": "64x64"}, "size", "unknown_parameter"),
    ],
)
def test_bad_remix_bodies_name_the_parameter(stack, source, body, param, code):
    response = httpx.post(
        f"{stack.base_url}/videos/{source.id}/remix", json=body, headers={"authorization": f"Bearer {KEY_A}"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


def test_bad_prompt_through_the_sdk(client, source):
    with pytest.raises(openai.BadRequestError) as error:
        client.videos.remix(source.id, prompt="")
    assert error.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as error:
        client.videos.remix(source.id, prompt="x", extra_body={"num_inference_steps": 9})
    assert (error.value.param, error.value.code) == ("num_inference_steps", "unknown_parameter")


def test_a_remix_webhook_url_is_checked_like_a_create(client, source):
    with pytest.raises(openai.BadRequestError) as error:
        client.videos.remix(source.id, prompt="x", extra_body={"webhook_url": "http://10.1.2.3/hook"})
    assert (error.value.param, error.value.code) == ("webhook_url", "invalid_webhook_url")


def test_an_idempotency_key_replays_the_first_remix(client, source):
    headers = {"Idempotency-Key": f"remix-{time.time_ns()}"}
    first = client.videos.remix(source.id, prompt="replayed", extra_headers=headers)
    again = client.videos.remix(source.id, prompt="replayed", extra_headers=headers)
    assert (again.id, again.remixed_from_video_id) == (first.id, source.id)
    with pytest.raises(openai.ConflictError) as other_prompt:
        client.videos.remix(source.id, prompt="something else", extra_headers=headers)
    assert other_prompt.value.code == "idempotency_key_reused" and first.id in other_prompt.value.message
    # The same key and prompt on another (completed) source is another request.
    assert client.videos.poll(first.id, poll_interval_ms=50).status == "completed"
    with pytest.raises(openai.ConflictError):
        client.videos.remix(first.id, prompt="replayed", extra_headers=headers)
