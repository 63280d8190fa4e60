"""Images through the official SDK: generations and edits answered synchronously, as b64 PNG or as
a URL that serves the bytes."""

from __future__ import annotations

import base64
import io
import time

import httpx
import openai
import pytest
from PIL import Image

from tests.integration.conftest import KEY_A


def _png(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _upload(color: str, size=(48, 32), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def test_generate_returns_a_png_of_the_requested_size(client):
    result = client.images.generate(
        model="tiny-qwen-image", prompt="a lighthouse", size="64x48", response_format="b64_json"
    )
    assert len(result.data) == 1
    assert _png(result.data[0].b64_json).size == (64, 48)
    assert (result.size, result.output_format) == ("64x48", "png")
    assert result.created > 0


def test_generate_n_images(client):
    result = client.images.generate(model="tiny-qwen-image", prompt="two cats", n=2, size="32x32")
    assert [_png(item.b64_json).size for item in result.data] == [(32, 32), (32, 32)]


def test_same_seed_gives_byte_identical_pngs_and_another_seed_does_not(stack, client):
    def make(seed: int, response_format: str = "b64_json"):
        return client.images.generate(
            model="tiny-qwen-image", prompt="seeded", size="48x32", response_format=response_format,
            extra_body={"seed": seed},
        ).data[0]

    first, second = (base64.b64decode(make(7).b64_json) for _ in range(2))
    assert first.startswith(b"\x89PNG\r\n\x1a\n") and first == second
    other = base64.b64decode(make(8).b64_json)
    assert other != first
    assert _png(make(8).b64_json).tobytes() != _png(make(7).b64_json).tobytes()  # pixels, not just bytes
    # Two more jobs, served from the blob store: separate jobs, the same bytes.
    urls = [make(7, "url").url for _ in range(2)]
    assert urls[0] != urls[1]
    served = [httpx.get(url, headers={"authorization": f"Bearer {KEY_A}"}).content for url in urls]
    assert served == [first, first]


def test_url_response_serves_the_bytes_to_the_owner_only(stack, client):
    result = client.images.generate(model="tiny-qwen-image", prompt="a map", size="48x32", response_format="url")
    url = result.data[0].url
    assert "/v1/images/img_" in url and url.endswith("/content?index=0")
    owner = httpx.get(url, headers={"authorization": f"Bearer {KEY_A}"})
    assert owner.status_code == 200 and owner.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(owner.content)).size == (48, 32)
    stranger = httpx.get(url, headers={"authorization": "Bearer sk-test-tenant-b"})
    assert stranger.status_code == 404
    image_id = url.split("/images/")[1].split("/")[0]
    job = httpx.get(f"{stack.base_url}/images/{image_id}", headers={"authorization": f"Bearer {KEY_A}"}).json()
    assert (job["id"], job["status"], job["progress"], job["size"]) == (image_id, "completed", 100, "48x32")


def test_edit_with_a_list_of_images_uses_the_image_array_form(client):
    result = client.images.edit(
        model="tiny-qwen-image-edit",
        image=[("a.png", _upload("red"), "image/png"), ("b.jpg", _upload("blue", fmt="JPEG"), "image/jpeg")],
        prompt="put the red thing on the blue thing",
        size="64x64",
    )
    assert _png(result.data[0].b64_json).size == (64, 64)


def test_edit_with_one_image_and_no_size_follows_its_aspect_ratio(client):
    result = client.images.edit(
        model="tiny-qwen-image-edit", image=("one.png", _upload("green", size=(96, 48)), "image/png"), prompt="make it blue"
    )
    # 96x48 is scaled to about the 64x64 default area (x0.94) and rounded to multiples of 16.
    assert _png(result.data[0].b64_json).size == (96, 48)
    assert result.size == "96x48"


def test_jpeg_and_webp_output_formats(client):
    for fmt, magic in (("jpeg", b"\xff\xd8\xff"), ("webp", b"RIFF")):
        result = client.images.generate(
            model="tiny-qwen-image", prompt="formats", size="32x32", output_format=fmt, output_compression=80
        )
        assert base64.b64decode(result.data[0].b64_json).startswith(magic)
        assert result.output_format == fmt


def test_past_the_wait_bound_the_error_names_the_job_to_follow(stack, spawn_api):
    impatient = spawn_api({"DARKROOM_IMAGE_WAIT_TIMEOUT_S": "0.05"})
    client = openai.OpenAI(base_url=impatient, api_key=KEY_A, max_retries=2)
    with pytest.raises(openai.APIStatusError) as error:
        client.images.generate(
            model="tiny-qwen-image", prompt="slow", size="128x128", extra_body={"num_inference_steps": 30}
        )
    assert error.value.status_code == 504 and error.value.code == "image_job_timeout"
    image_id = error.value.message.split("Image job ")[1].split(" ")[0]
    auth = {"authorization": f"Bearer {KEY_A}"}
    # x-should-retry: false kept the SDK from submitting the same work again.
    assert error.value.response.headers["x-should-retry"] == "false"
    # The job goes on, and can be followed to its end.
    deadline = time.monotonic() + 120
    while (job := httpx.get(f"{impatient}/images/{image_id}", headers=auth).json())["status"] != "completed":
        assert job["status"] in ("queued", "in_progress") and time.monotonic() < deadline
        time.sleep(0.05)
    content = httpx.get(f"{impatient}/images/{image_id}/content", headers=auth)
    assert Image.open(io.BytesIO(content.content)).size == (128, 128)
