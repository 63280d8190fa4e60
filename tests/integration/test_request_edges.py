"""Hostile and careless requests at the HTTP edge of a live API (uvicorn, raw httpx and the SDK):
bodies over the cap while they stream in, JSON the API cannot use, oversized headers and form
fields, slow image hosts that must not starve the other routes, a spent Idempotency-Key, and the
API description behind the key. Each answer is OpenAI-shaped, none is a 500, nothing is stored."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.image_server import png_bytes, serve_images
from tests.integration.conftest import KEY_A, KEY_B

AUTH = {"authorization": f"Bearer {KEY_A}"}
JSON = {**AUTH, "content-type": "application/json"}
MB = 1024 * 1024


def _api_log_offset(stack) -> int:
    return stack.log_path("api").stat().st_size


def _api_log_since(stack, offset: int) -> str:
    with stack.log_path("api").open() as log:
        log.seek(offset)
        return log.read()


UNUSABLE_JSON = [
    b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"prompt": "x", "seed": ' + b"7" * 5000 + b"}",
    b'{"prompt": "x", "guidance_scale": NaN}',
    b'{"prompt": "x", "guidance_scale": 1e999}',
    b'{"prompt": "\xc3\x28"}',
    b'["prompt"]',
]


@pytest.mark.parametrize("path", ["/videos", "/images/generations"])
def test_json_the_api_cannot_use_is_a_400_with_no_traceback(stack, nothing_written, path):
    offset = _api_log_offset(stack)
    for body in UNUSABLE_JSON:
        response = httpx.post(f"{stack.base_url}{path}", content=body, headers=JSON, timeout=30)
        assert response.status_code == 400, body[:40]
        assert response.json()["error"]["code"] == "invalid_json"
    log = _api_log_since(stack, offset)
    assert "Traceback" not in log and "unhandled error" not in log


def _chunks(head: bytes, filler: int, tail: bytes):
    yield head
    for _ in range(filler // MB):
        yield b"x" * MB
    yield tail


def test_a_body_over_the_cap_is_refused_while_it_streams_in(stack, nothing_written):
    # The test stack's cap: four images and a mask of 2 MB as data: URLs, plus 1 MiB (about 12 MB).
    declared = b'{"prompt": "' + b"x" * (40 * MB) + b'"}'
    response = httpx.post(f"{stack.base_url}/videos", content=declared, headers=JSON, timeout=60)
    assert (response.status_code, response.json()["error"]["code"]) == (413, "request_too_large")
    chunked = _chunks(b'{"prompt": "', 40 * MB, b'"}')  # no Content-Length: counted as it arrives
    response = httpx.post(f"{stack.base_url}/videos", content=chunked, headers=JSON, timeout=60)
    assert (response.status_code, response.json()["error"]["code"]) == (413, "request_too_large")
    boundary = b"edge"
    form = _chunks(
        b"--edge\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n", 40 * MB, b"\r\n--edge--\r\n"
    )
    response = httpx.post(
        f"{stack.base_url}/images/edits",
        content=form,
        headers={**AUTH, "content-type": f"multipart/form-data; boundary={boundary.decode()}"},
        timeout=60,
    )
    # A text field is at most 64 KiB: refused at its 65th kilobyte, naming it.
    assert (response.status_code, response.json()["error"]["param"]) == (400, "prompt")


def test_a_form_field_sent_twice_is_refused_naming_it(stack, nothing_written):
    fields = [("model", (None, "tiny-wan")), ("prompt", (None, "a fox")), ("prompt", (None, "a cat"))]
    response = httpx.post(f"{stack.base_url}/videos", files=fields, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt" and "more than once" in response.json()["error"]["message"]


def test_megabytes_of_headers_are_refused(stack):
    try:
        response = httpx.get(f"{stack.base_url}/models", headers={**AUTH, "x-padding": "a" * (2 * MB)})
    except httpx.HTTPError:
        return  # refused, and the connection closed before the client read the 400
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_the_api_description_needs_a_key(stack, path):
    root = stack.base_url.removesuffix("/v1")
    assert httpx.get(f"{root}{path}").status_code == 401
    assert httpx.get(f"{root}{path}", headers=AUTH).status_code == 200


def test_an_idempotency_key_whose_video_was_deleted_is_spent(client):
    headers = {"Idempotency-Key": "edge-deleted"}
    video = client.videos.create(model="tiny-wan", prompt="spent", size="16x16", extra_headers=headers)
    client.videos.delete(video.id)
    with pytest.raises(openai.ConflictError) as error:
        client.videos.create(model="tiny-wan", prompt="spent", size="16x16", extra_headers=headers)
    assert error.value.code == "idempotency_key_job_deleted" and video.id in error.value.message


def test_a_lora_that_may_not_be_used_answers_as_a_missing_one(client, stack):
    loras = stack.data_dir / "loras"
    (loras / "shared").mkdir(parents=True, exist_ok=True)
    (loras / "shared" / "weights.bin").write_bytes(b"\x80\x04 a pickle")

    def refusal(name: str) -> str:
        with pytest.raises(openai.BadRequestError) as error:
            client.images.generate(
                model="tiny-qwen-image", prompt="x", size="32x32", extra_body={"lora": [{"path_or_id": name}]}
            )
        assert (error.value.code, error.value.param) == ("lora_not_found", "lora")
        # "Image job <id> failed: <the job's message>": the message, without the job's id
        return error.value.body["message"].split(" failed: ", 1)[1].replace(name, "<name>")

    assert refusal("shared/weights.bin") == refusal("shared/nothing-here")
    assert "weights.bin" not in refusal("shared")  # a directory's contents are not listed


def test_slow_image_hosts_never_starve_the_other_routes(stack, spawn_api):
    """50 image URLs on a host that sends its headers a byte a second: the API fetches a few at
    once, each within its deadline, refuses the rest at once, and answers /health and /v1/models
    meanwhile."""
    base_url = spawn_api(
        {
            "DARKROOM_IMAGE_URL_ALLOW_HTTP": "true",
            "DARKROOM_IMAGE_URL_ALLOWED_HOSTS": "127.0.0.1",
            "DARKROOM_IMAGE_URL_TIMEOUT_S": "3",
            "DARKROOM_IMAGE_URL_MAX_FETCHES": "6",
            "DARKROOM_IMAGE_URL_MAX_FETCHES_PER_KEY": "4",
        }
    )
    answers: list[httpx.Response] = []
    with serve_images(image=png_bytes(), too_large_bytes=MB, drip_s=1.0) as host:
        body = {"prompt": "x", "model": "tiny-wan-i2v", "input_reference": {"image_url": host.url("/drip-headers")}}

        def create(index: int) -> None:
            key = KEY_A if index % 2 else KEY_B
            answers.append(
                httpx.post(f"{base_url}/videos", json=body, headers={"authorization": f"Bearer {key}"}, timeout=120)
            )

        with ThreadPoolExecutor(50) as pool:
            for index in range(50):
                pool.submit(create, index)
            while not host.requests:  # the first fetches are hanging on the host
                threading.Event().wait(0.05)
            health = httpx.get(f"{base_url.removesuffix('/v1')}/health", timeout=30)
            models = httpx.get(f"{base_url}/models", headers=AUTH, timeout=30)
            assert (health.status_code, models.status_code) == (200, 200)
    codes = sorted(response.json()["error"]["code"] for response in answers)
    fetched = codes.count("image_url_timeout")
    assert 1 <= fetched <= 6 and len(codes) == 50
    refused = [response for response in answers if response.status_code in (429, 503)]
    assert len(refused) == 50 - fetched
    assert all(response.headers["retry-after"] == "3" for response in refused)
