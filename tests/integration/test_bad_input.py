"""Every bad request gets an OpenAI-shaped 4xx naming the field, and leaves nothing behind: no job
row and no stored input."""

from __future__ import annotations

import io
import struct
import zlib

import httpx
import openai
import pytest
from PIL import Image

from tests.integration.conftest import KEY_A


def _png(size=(32, 32), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, fmt)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes whose header claims a huge image: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


VIDEO_CASES = [
    ({"prompt": ""}, "prompt", "invalid_value"),
    ({"prompt": "   "}, "prompt", "invalid_value"),
    ({"prompt": "x", "model": "sora-2"}, "model", "model_not_found"),
    ({"prompt": "x", "model": "tiny-qwen-image"}, "model", "model_not_supported"),
    ({"prompt": "x", "model": "tiny-wan", "size": "big"}, "size", "invalid_value"),
    ({"prompt": "x", "model": "tiny-wan", "size": "64x70"}, "size", "invalid_value"),
    ({"prompt": "x", "model": "tiny-wan", "size": "1280x720"}, "size", "invalid_value"),
    ({"prompt": "x", "model": "tiny-wan", "seconds": "12"}, "seconds", "invalid_value"),
    ({"prompt": "x", "model": "tiny-wan", "seconds": "four"}, "seconds", "invalid_value"),
    ({"prompt": "x", "model": "tiny-wan", "extra_body": {"guidance": 3}}, "guidance", "unknown_parameter"),
    ({"prompt": "x", "model": "tiny-wan", "extra_body": {"seed": -1}}, "seed", "invalid_value"),
]


@pytest.mark.parametrize("kwargs,param,code", VIDEO_CASES)
def test_bad_video_requests(client, nothing_written, kwargs, param, code):
    with pytest.raises(openai.BadRequestError) as error:
        client.videos.create(**kwargs)
    assert (error.value.status_code, error.value.param, error.value.code) == (400, param, code)
    assert error.value.type == "invalid_request_error" and error.value.message


def test_missing_prompt_in_json(stack, nothing_written):
    response = httpx.post(f"{stack.base_url}/videos", json={"model": "tiny-wan"}, headers={"authorization": f"Bearer {KEY_A}"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "Missing required parameter: 'prompt'.",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "missing_required_parameter",
        }
    }


def test_input_reference_on_a_text_to_video_model(client, nothing_written):
    with pytest.raises(openai.BadRequestError) as error:
        client.videos.create(model="tiny-wan", prompt="x", input_reference=("r.png", _png(), "image/png"))
    assert (error.value.param, error.value.code) == ("input_reference", "unsupported_parameter")


def test_an_input_reference_too_thin_for_the_model(client, nothing_written):
    # Scaled whole to cover the frame before its crop, this 1x60000 image took the worker 1.2 GB.
    with pytest.raises(openai.BadRequestError) as error:
        client.videos.create(model="tiny-wan-i2v", prompt="x", input_reference=("thin.png", _png((1, 60000)), "image/png"))
    assert (error.value.param, error.value.code) == ("input_reference", "invalid_image_dimensions")
    assert "1x60000" in error.value.message and "16 times" in error.value.message


IMAGE_CASES = [
    ({"n": 0}, "n", "invalid_value"),
    ({"n": 11}, "n", "invalid_value"),
    ({"n": 5}, "n", "invalid_value"),
    ({"model": "dall-e-3"}, "model", "model_not_found"),
    ({"model": "tiny-wan"}, "model", "model_not_supported"),
    ({"model": "tiny-qwen-image-edit"}, "model", "model_not_supported"),
    ({"size": "64by64"}, "size", "invalid_value"),
    ({"size": "4096x4096"}, "size", "invalid_value"),
    ({"response_format": "gif"}, "response_format", "invalid_value"),
    ({"stream": True, "n": 2}, "n", "unsupported_parameter"),  # more: test_image_streaming.py
    ({"background": "transparent"}, "background", "unsupported_parameter"),
    ({"extra_body": {"steps": 3}}, "steps", "unknown_parameter"),
]


@pytest.mark.parametrize("kwargs,param,code", IMAGE_CASES)
def test_bad_image_generations(client, nothing_written, kwargs, param, code):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(**{"model": "tiny-qwen-image", "prompt": "x", **kwargs})
    assert (error.value.status_code, error.value.param, error.value.code) == (400, param, code)


EDIT_CASES = [
    ([("notes.txt", b"just some text", "text/plain")], 400, "invalid_image"),
    ([("cut.png", _png()[:60], "image/png")], 400, "invalid_image"),
    ([("bomb.png", _png_claiming(20000, 20000), "image/png")], 400, "image_too_large"),
    ([("wide.png", _png((1100, 1000)), "image/png")], 400, "image_too_large"),
    ([("huge.bmp", b"BM" + b"\0" * (2 * 1024 * 1024 + 10), "image/bmp")], 413, "file_too_large"),
    ([("a.gif", _png(fmt="GIF"), "image/gif")], 400, "invalid_image_format"),
    # 60,000 pixels, within the pixel limit, but too thin for any edit: a 500 from diffusers before.
    ([("thin.png", _png((1, 60000)), "image/png")], 400, "invalid_image_dimensions"),
    ([("ok.png", _png(), "image/png"), ("flat.png", _png((4000, 20)), "image/png")], 400, "invalid_image_dimensions"),
    ([(f"{i}.png", _png(), "image/png") for i in range(4)], 400, "invalid_value"),
]


@pytest.mark.parametrize("images,status,code", EDIT_CASES)
def test_bad_image_edits(client, nothing_written, images, status, code):
    with pytest.raises(openai.APIStatusError) as error:
        client.images.edit(model="tiny-qwen-image-edit", image=images, prompt="x")
    assert (error.value.status_code, error.value.param, error.value.code) == (status, "image", code)


def test_edit_without_an_image(stack, nothing_written):
    # (None, value) parts make httpx send multipart/form-data with no file at all.
    response = httpx.post(
        f"{stack.base_url}/images/edits",
        files={"prompt": (None, "x"), "model": (None, "tiny-qwen-image-edit")},
        headers={"authorization": f"Bearer {KEY_A}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "image"


@pytest.mark.parametrize("api_key,code", [("", "missing_api_key"), ("sk-wrong", "invalid_api_key")])
def test_missing_or_wrong_key_is_401(stack, nothing_written, api_key, code):
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    for method, path in (("POST", "/videos"), ("GET", "/videos"), ("GET", "/models"), ("POST", "/images/generations")):
        response = httpx.request(method, f"{stack.base_url}{path}", json={"prompt": "x"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == code
    with pytest.raises(openai.AuthenticationError):
        stack.client("sk-wrong").videos.list()


def test_unknown_ids_are_404(client, nothing_written):
    for call in (client.videos.retrieve, client.videos.delete, client.videos.download_content):
        with pytest.raises(openai.NotFoundError) as error:
            call("video_doesnotexist")
        assert error.value.code == "not_found"


def test_list_after_an_unknown_id(client, nothing_written):
    with pytest.raises(openai.BadRequestError) as error:
        client.videos.list(after="video_nope")
    assert error.value.param == "after"


def test_unsupported_content_type(stack, nothing_written):
    response = httpx.post(
        f"{stack.base_url}/videos", content=b"prompt=x", headers={"authorization": f"Bearer {KEY_A}", "content-type": "text/plain"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_content_type"


def test_broken_json(stack, nothing_written):
    response = httpx.post(
        f"{stack.base_url}/images/generations", content=b"{not json",
        headers={"authorization": f"Bearer {KEY_A}", "content-type": "application/json"},
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


# Extension parameters are checked against the model: a knob it lacks or a value past its limit.
EXTENSION_CASES = [
    ("images", "tiny-flux", {"negative_prompt": "blurry"}, "negative_prompt"),
    ("images", "tiny-flux", {"true_cfg_scale": 4.0}, "true_cfg_scale"),
    ("images", "tiny-qwen-image", {"guidance_scale": 4.0}, "guidance_scale"),
    ("images", "tiny-qwen-image", {"num_inference_steps": 201}, "num_inference_steps"),
    ("images", "tiny-qwen-image", {"num_inference_steps": 0}, "num_inference_steps"),
    ("videos", "tiny-wan", {"true_cfg_scale": 4.0}, "true_cfg_scale"),
    ("videos", "tiny-wan", {"num_inference_steps": 201}, "num_inference_steps"),
    ("videos", "tiny-wan", {"seed": 2**63}, "seed"),
    ("videos", "tiny-wan", {"guidance_scale": -1}, "guidance_scale"),
]


@pytest.mark.parametrize("endpoint,model,extra,param", EXTENSION_CASES)
def test_extension_parameters_are_checked_per_model(client, nothing_written, endpoint, model, extra, param):
    with pytest.raises(openai.BadRequestError) as error:
        if endpoint == "images":
            client.images.generate(model=model, prompt="x", extra_body=extra)
        else:
            client.videos.create(model=model, prompt="x", extra_body=extra)
    assert (error.value.status_code, error.value.param) == (400, param)
