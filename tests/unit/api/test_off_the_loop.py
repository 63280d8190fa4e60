"""Decoding and checking an input image runs off the event loop: while one request's image is being
checked, however long that takes, another request is answered. For each way an image arrives: a
data: URL, and a file part."""

from __future__ import annotations

import asyncio
import base64
import threading

import httpx
import pytest

import api.bodies
import api.input_reference
from api.app import create_app
from darkroom.settings import Settings

NOT_AN_IMAGE = b"not a png"
DATA_URL = {
    "json": {
        "prompt": "x",
        "model": "tiny-wan-i2v",
        "input_reference": {"image_url": "data:image/png;base64," + base64.b64encode(NOT_AN_IMAGE).decode()},
    }
}
FILE_PART = {"data": {"prompt": "x", "model": "tiny-qwen-image-edit"}, "files": {"image": ("a.png", NOT_AN_IMAGE)}}


@pytest.mark.parametrize(
    "module,path,request_body",
    [(api.input_reference, "/v1/videos", DATA_URL), (api.bodies, "/v1/images/edits", FILE_PART)],
    ids=["data: URL", "file part"],
)
def test_a_cheap_request_is_answered_while_an_image_is_checked(tmp_path, monkeypatch, module, path, request_body):
    checking, cheap_answered = threading.Event(), threading.Event()
    gate_opened_by_the_cheap_request: list[bool] = []
    check_image = module.validate_image

    def slow_check(*args, **kwargs):
        # Stands in for an image that takes long to decode: it returns once a request sent after
        # it started has been answered. On the event loop, that can never happen (it gives up
        # after 10 s).
        checking.set()
        gate_opened_by_the_cheap_request.append(cheap_answered.wait(timeout=10))
        return check_image(*args, **kwargs)

    monkeypatch.setattr(module, "validate_image", slow_check)
    app = create_app(Settings(data_dir=tmp_path))

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as client:
            hostile = asyncio.create_task(client.post(path, **request_body))
            while not checking.is_set():
                await asyncio.sleep(0.01)
            assert (await client.get("/health")).status_code == 200
            cheap_answered.set()
            return await hostile

    answer = asyncio.run(run())
    assert answer.json()["error"]["code"] == "invalid_image"
    assert gate_opened_by_the_cheap_request == [True]
