"""Request bodies at the edge (api/request_body.py): the cap counted while a body streams in, and
the strict JSON parse, on routes that read their body with `read_body` and on one whose body
FastAPI parses itself."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api.bodies import read_body
from api.errors import RefusedBody, install_error_handlers
from api.request_body import MAX_JSON_VALUES, RequestBodyGuard, parse_json_object
from api.schemas import VideoRemixRequest
from darkroom.settings import Settings

LIMIT = 512 * 1024
IMAGE_LIMIT = 64 * 1024
UNUSABLE_JSON = {
    "not JSON": b"{not json",
    "nested too deeply": b'{"prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "a huge integer": b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}",
    "NaN": b'{"prompt": "x", "guidance_scale": NaN}',
    "Infinity": b'{"prompt": "x", "guidance_scale": -Infinity}',
    "a literal that overflows to infinity": b'{"prompt": "x", "guidance_scale": 1e999}',
    "invalid UTF-8": b'{"prompt": "\xff\xfe"}',
    "UTF-16": json.dumps({"prompt": "x"}).encode("utf-16"),
    "an array": b'[{"prompt": "x"}]',
    "a string": b'"prompt"',
    "too many values": b'{"prompt": "x", "a": [' + b"0," * MAX_JSON_VALUES + b"0]}",
}


@pytest.mark.parametrize("case", UNUSABLE_JSON)
def test_json_the_api_cannot_use_is_refused_as_invalid_json(case):
    with pytest.raises(RefusedBody) as refused:
        parse_json_object(UNUSABLE_JSON[case])
    error = refused.value.error
    assert (error.status, error.code, error.param) == (400, "invalid_json", None)


def test_a_json_object_is_parsed():
    assert parse_json_object(b'{"prompt": "a, b, c", "seed": 7, "scale": 1.5}') == {
        "prompt": "a, b, c",
        "seed": 7,
        "scale": 1.5,
    }


class Remix(BaseModel):
    prompt: str


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestBodyGuard, limit=LIMIT, backstops={"/uploads": 4 * LIMIT})
    app.state.routes_run = []
    settings = Settings(max_form_field_bytes=1024, max_upload_bytes=IMAGE_LIMIT)

    @app.post("/read-body")
    async def with_read_body(request: Request):
        app.state.routes_run.append("read-body")
        body, _ = await read_body(request, VideoRemixRequest, file_fields=(), settings=settings)
        return {"prompt": body.prompt}

    @app.post("/fastapi-body")
    async def with_fastapi_body(body: Remix):  # FastAPI reads and parses this body itself
        app.state.routes_run.append("fastapi-body")
        return {"prompt": body.prompt}

    @app.post("/uploads")
    async def upload(request: Request):
        return {"bytes": len(await request.body())}

    return app


@pytest.mark.parametrize("route", ["/read-body", "/fastapi-body"])
@pytest.mark.parametrize("case", UNUSABLE_JSON)
def test_unusable_json_is_a_400_on_every_route_never_a_500(app, caplog, route, case):
    caplog.set_level(logging.INFO)
    response = TestClient(app).post(route, content=UNUSABLE_JSON[case], headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert not [record for record in caplog.records if record.exc_info or "unhandled" in record.getMessage()]


def test_a_body_over_the_cap_is_refused_before_the_route_reads_it(app):
    client = TestClient(app)
    for route in ("/read-body", "/fastapi-body"):
        response = client.post(route, content=b'{"prompt": "' + b"x" * LIMIT + b'"}', headers={"content-type": "application/json"})
        assert (response.status_code, response.json()["error"]["code"]) == (413, "request_too_large")
        assert response.headers["connection"] == "close"
    assert app.state.routes_run == []  # the declared length was enough


def chunks(total: int, size: int = 8192):
    """A body with no Content-Length: sent chunked, its size known only as it arrives."""
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def test_a_chunked_body_is_counted_as_it_streams_in(app):
    client = TestClient(app)
    response = client.post("/read-body", content=chunks(LIMIT + 1), headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["error"]["code"]) == (413, "request_too_large")
    response = client.post(
        "/read-body", content=chunks(LIMIT + 1), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (413, "request_too_large")
    assert app.state.routes_run == ["read-body", "read-body"]  # refused while the route read it


def test_a_route_with_caps_of_its_own_is_only_counted_against_its_backstop(app):
    client = TestClient(app)
    assert client.post("/uploads", content=chunks(2 * LIMIT)).json() == {"bytes": 2 * LIMIT}
    # A declared length over the backstop is left to the route, which can say which cap it passes.
    declared = client.post("/uploads", content=b"x" * (4 * LIMIT + 1))
    assert (declared.status_code, declared.json()["error"]["code"]) == (413, "request_too_large")
    assert client.post("/uploads", content=chunks(4 * LIMIT + 1)).status_code == 413


def test_multipart_text_fields_are_small_except_a_data_url_and_each_is_sent_once(app):
    client = TestClient(app)

    def post(fields: list[tuple[str, str]]):
        files = [(name, (None, value)) for name, value in fields]
        return client.post("/read-body", files=files)

    assert post([("prompt", "x" * 1000)]).json() == {"prompt": "x" * 1000}
    too_long = post([("prompt", "x" * 1025)]).json()["error"]
    assert (too_long["param"], too_long["code"]) == ("prompt", "invalid_value")
    # An [image_url] field may carry a data: URL up to the image limit (this route then refuses
    # the field itself: a remix takes no image).
    data_url = "data:image/png;base64," + "A" * 20_000
    assert post([("prompt", "x"), ("input_reference[image_url]", data_url)]).json()["error"]["param"] == "input_reference"
    too_large = post([("prompt", "x"), ("input_reference[image_url]", data_url + "A" * IMAGE_LIMIT * 2)]).json()["error"]
    assert (too_large["param"], too_large["code"]) == ("input_reference.image_url", "file_too_large")
    twice = post([("prompt", "x"), ("prompt", "y")]).json()["error"]
    assert (twice["param"], twice["code"]) == ("prompt", "invalid_value") and "more than once" in twice["message"]
