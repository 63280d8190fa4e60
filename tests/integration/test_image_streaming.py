"""`stream=true` on image generations and edits, through the official SDK against the live stack:
partial images then the completed image as the SDK's typed events, the same image as the
synchronous answer, the job on its row as usual, and a job that ends badly ends the stream with
an error the SDK raises."""

from __future__ import annotations

import base64
import io
import secrets
import threading
import time

import openai
import pytest
from openai.types import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
)
from PIL import Image
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from bench.processes import wait_until
from storage import jobs
from storage.models import Job
from tests.integration.conftest import KEY_A

PNG, JPEG = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"


@pytest.fixture
def engine(stack):
    engine = create_engine(stack.env["DARKROOM_DATABASE_URL"])
    yield engine
    engine.dispose()


def _decoded(b64: str, magic: bytes, size: tuple[int, int]) -> Image.Image:
    data = base64.b64decode(b64)
    assert data.startswith(magic)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.size == size
    return image


def _upload(color: str, size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def _job_with_prompt(engine, prompt: str) -> Job:
    with Session(engine) as session:
        return session.scalars(select(Job).where(Job.params["prompt"].as_string() == prompt)).one()


@pytest.mark.parametrize("partial_images", [0, 2, 3])
def test_generate_streams_partials_then_the_completed_image(client, engine, partial_images):
    prompt = f"a streamed lighthouse {secrets.token_hex(4)}"
    stream = client.images.generate(
        model="tiny-qwen-image", prompt=prompt, size="64x48", stream=True, partial_images=partial_images,
        extra_body={"seed": 11},
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_generation.partial_image"] * partial_images + [
        "image_generation.completed"
    ]
    partials, completed = events[:-1], events[-1]
    assert all(isinstance(event, ImageGenPartialImageEvent) for event in partials)
    assert [event.partial_image_index for event in partials] == list(range(partial_images))
    assert isinstance(completed, ImageGenCompletedEvent)
    for event in events:
        _decoded(event.b64_json, PNG, (64, 48))
        assert (event.size, event.output_format, event.background, event.quality) == ("64x48", "png", "opaque", "auto")
        assert abs(event.created_at - time.time()) < 60
    assert completed.usage.total_tokens == 0 and completed.usage.input_tokens_details.text_tokens == 0
    # Recorded as any job: completed, its previews on the row and the image in the store.
    job = _job_with_prompt(engine, prompt)
    assert (job.status, job.progress, len(job.output_keys)) == ("completed", 100, 1)
    assert len(job.partial_keys) == partial_images
    assert job.params.get("partial_images", 0) == partial_images


def test_the_streamed_image_is_the_synchronous_image_for_the_same_seed(client):
    common = {"model": "tiny-qwen-image", "prompt": "same seed", "size": "48x32", "extra_body": {"seed": 21}}
    streamed = list(client.images.generate(**common, stream=True, partial_images=2))[-1]
    synchronous = client.images.generate(**common)
    assert base64.b64decode(streamed.b64_json) == base64.b64decode(synchronous.data[0].b64_json)


def test_flux_streams_jpeg_partials(client):
    events = list(
        client.images.generate(
            model="tiny-flux", prompt="a jpeg fox", size="48x32", output_format="jpeg", quality="high",
            stream=True, partial_images=3, extra_body={"num_inference_steps": 8},
        )
    )
    assert [event.type for event in events][-1] == "image_generation.completed"
    assert [event.partial_image_index for event in events[:-1]] == [0, 1, 2]
    for event in events:
        _decoded(event.b64_json, JPEG, (48, 32))
        assert (event.output_format, event.quality) == ("jpeg", "high")


@pytest.mark.parametrize("partial_images", [0, 2, 3])
def test_edit_streams_image_edit_events(client, partial_images):
    stream = client.images.edit(
        model="tiny-qwen-image-edit",
        image=("red.png", _upload("red"), "image/png"),
        prompt="make it blue",
        size="64x48",
        stream=True,
        partial_images=partial_images,
        safety_identifier="user-42",
    )
    events = list(stream)
    assert [event.type for event in events] == ["image_edit.partial_image"] * partial_images + ["image_edit.completed"]
    assert all(isinstance(event, ImageEditPartialImageEvent) for event in events[:-1])
    assert [event.partial_image_index for event in events[:-1]] == list(range(partial_images))
    assert isinstance(events[-1], ImageEditCompletedEvent)
    assert events[-1].safety_identifier == "user-42"
    for event in events:
        _decoded(event.b64_json, PNG, (64, 48))


def test_a_job_cancelled_mid_stream_ends_the_stream_with_an_error(client, engine):
    """Cancelled through the job state machine, as a DELETE does: the worker stops at its next
    step, and the stream, already past a partial image, ends with an error the SDK raises."""
    prompt = f"cancel me {secrets.token_hex(4)}"
    stream = client.images.generate(
        model="tiny-qwen-image", prompt=prompt, size="64x64", stream=True, partial_images=3,
        # Previews after steps 50, 100 and 150: the cancel, sent on the first, has 150 steps to
        # land in however slowly the stream hears of it.
        extra_body={"num_inference_steps": 200},
    )
    received = []
    with pytest.raises(openai.APIError) as error:
        for event in stream:
            received.append(event.type)
            if len(received) == 1:
                with Session(engine) as session:
                    assert jobs.cancel(session, _job_with_prompt(engine, prompt).id)
    # The first partial at least (the cancel may land after a later one), never the completion.
    assert received and set(received) == {"image_generation.partial_image"}
    assert error.value.code == "cancelled" and "cancelled" in error.value.message
    assert error.value.type == "server_error"
    assert _job_with_prompt(engine, prompt).status == "cancelled"


def test_past_the_wait_bound_the_stream_ends_with_an_error_naming_the_job(stack, spawn_api, engine):
    impatient = openai.OpenAI(base_url=spawn_api({"DARKROOM_IMAGE_WAIT_TIMEOUT_S": "0.05"}), api_key=KEY_A)
    stream = impatient.images.generate(
        model="tiny-qwen-image", prompt="too slow to wait for", size="128x128", stream=True,
        extra_body={"num_inference_steps": 30},
    )
    with pytest.raises(openai.APIError) as error:
        list(stream)
    assert error.value.code == "image_job_timeout"
    image_id = error.value.message.split("Image job ")[1].split(" ")[0]
    # The job goes on to completion all the same: nothing accepted is lost.
    with Session(engine) as session:
        status = wait_until(
            lambda: (status := jobs.status_of(session, image_id)) in jobs.TERMINAL and status,
            timeout_s=120,
            what="the job's end",
        )
    assert status == "completed"


def test_two_streams_at_once_each_get_their_own_images(client):
    results: dict[int, list] = {}

    def run(seed: int) -> None:
        results[seed] = list(
            client.images.generate(
                model="tiny-qwen-image", prompt="concurrent", size="32x32", stream=True, partial_images=1,
                extra_body={"seed": seed},
            )
        )

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [len(results[seed]) for seed in (1, 2)] == [2, 2]
    assert results[1][-1].b64_json != results[2][-1].b64_json


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"stream": True, "n": 2}, "n", "unsupported_parameter"),
        ({"stream": True, "partial_images": 4}, "partial_images", "invalid_value"),
        ({"stream": True, "partial_images": -1}, "partial_images", "invalid_value"),
        ({"stream": True, "response_format": "url"}, "response_format", "unsupported_parameter"),
        ({"partial_images": 2}, "partial_images", "unsupported_parameter"),  # no stream to carry them
    ],
)
def test_bad_stream_parameters_are_400s_naming_the_parameter(client, engine, kwargs, param, code):
    prompt = f"refused {secrets.token_hex(4)}"
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(model="tiny-qwen-image", prompt=prompt, size="32x32", **kwargs)
    assert (error.value.status_code, error.value.param, error.value.code) == (400, param, code)
    with Session(engine) as session:
        assert session.scalars(select(Job).where(Job.params["prompt"].as_string() == prompt)).first() is None


def test_a_streamed_edit_with_n_above_one_is_refused(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.edit(
            model="tiny-qwen-image-edit", image=("red.png", _upload("red"), "image/png"), prompt="two",
            n=2, stream=True,
        )
    assert error.value.param == "n" and error.value.code == "unsupported_parameter"
