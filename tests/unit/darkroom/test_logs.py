"""Log lines and request ids: the JSON formatter, the bound context, id validation, and the API's
request middleware on a real app with Darkroom's own error handlers."""

from __future__ import annotations

import json
import logging
import re
import threading
from datetime import datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api.errors import APIError, install_error_handlers
from api.request_context import DarkroomAPI, accepted_request_id, new_request_id
from darkroom.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    bind,
    current_context,
    log_context,
)


def _record(message: str = "hello %s", args: tuple = ("world",), **kwargs) -> logging.LogRecord:
    record = logging.getLogger("darkroom.test").makeRecord(
        "darkroom.test",
        logging.INFO,
        __file__,
        1,
        message,
        args,
        kwargs.pop("exc_info", None),
        extra=kwargs or None,
    )
    ContextFilter().filter(record)
    return record


def _json(record: logging.LogRecord) -> dict:
    line = JsonFormatter().format(record)
    assert "\n" not in line and len(line.splitlines()) == 1
    return json.loads(line)


def test_json_line_has_the_core_fields():
    line = _json(_record())
    assert line.keys() == {"ts", "level", "logger", "message"}
    assert (line["level"], line["logger"], line["message"]) == (
        "INFO",
        "darkroom.test",
        "hello world",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    assert datetime.fromisoformat(line["ts"]).utcoffset().total_seconds() == 0


def test_bound_ids_and_extras_are_fields():
    with log_context(request_id="req_abc", job_id="vid_1"):
        line = _json(_record(status=404, duration_ms=1.5, odd=object()))
    assert list(line)[:6] == ["ts", "level", "logger", "message", "request_id", "job_id"]
    assert (line["request_id"], line["job_id"], line["status"], line["duration_ms"]) == (
        "req_abc",
        "vid_1",
        404,
        1.5,
    )
    assert line["odd"].startswith(
        "<object object"
    )  # unserialisable extras are stringified, not fatal


def test_exception_text_and_awkward_characters_stay_on_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError as error:
        record = _record("failed: %s", (error,), exc_info=(type(error), error, error.__traceback__))
    line = _json(record)
    assert line["message"] == "failed: bad\nthing"
    assert line["exception"].startswith("Traceback") and "ValueError: bad" in line["exception"]
    odd = _json(_record("%s", ("a\u2028b\x85c\u2029d\x00e",)))
    assert odd["message"] == "a\u2028b\x85c\u2029d\x00e"


def test_context_nests_binds_and_ends():
    assert dict(current_context()) == {}
    with log_context(request_id="req_1"):
        with log_context(job_id="vid_1"):
            bind(event_id="evt_1")
            assert dict(current_context()) == {
                "request_id": "req_1",
                "job_id": "vid_1",
                "event_id": "evt_1",
            }
        assert dict(current_context()) == {"request_id": "req_1"}
    assert dict(current_context()) == {}
    assert not hasattr(_record(), "job_id")


def test_context_is_per_thread():
    seen = {}
    with log_context(job_id="vid_main"):
        thread = threading.Thread(target=lambda: seen.update(current_context()))
        thread.start()
        thread.join()
    assert seen == {}  # a new thread starts empty: one job's id never leaks into another's lines


def test_explicit_extra_wins_over_the_bound_id():
    with log_context(job_id="vid_bound"):
        assert _json(_record(job_id="vid_explicit"))["job_id"] == "vid_explicit"


def test_text_format_is_the_human_one_with_ids_appended():
    assert TextFormatter().format(_record()).endswith(" INFO darkroom.test hello world")
    with log_context(request_id="req_1", job_id="vid_1"):
        text = TextFormatter().format(_record())
    assert text.endswith("hello world [request_id=req_1 job_id=vid_1]")


@pytest.mark.parametrize(
    "value",
    [
        "req_0123456789abcdef01234567",
        "a",
        "trace.ID-7_x",
        "x" * 128,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-01",
    ],
)
def test_sane_request_ids_are_kept(value):
    assert accepted_request_id(value) == value


@pytest.mark.parametrize(
    "value",
    [None, "", "x" * 129, "has space", "new\nline", 'quo"te', "semi;colon", "ünï", "a/b", "{json}"],
)
def test_other_request_ids_are_refused(value):
    assert accepted_request_id(value) is None


def test_new_request_ids_look_like_openais():
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", value) for value in ids)


# --- The middleware, on an app with Darkroom's error handlers -----------------------------------


class Body(BaseModel):
    size: int


@pytest.fixture
def app() -> FastAPI:
    app = DarkroomAPI()
    install_error_handlers(app)
    seen = logging.getLogger("darkroom.test")

    @app.get("/ok")
    def ok() -> dict:  # sync: runs in a thread pool thread, which must see the bound id
        seen.info("in handler")
        return {"request_id": current_context().get("request_id")}

    @app.get("/api-error")
    async def api_error() -> None:
        raise APIError(409, "taken", code="conflict")

    @app.post("/validated")
    async def validated(body: Body) -> dict:
        return {}

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("kaboom")

    return app


def test_every_response_carries_a_request_id(app):
    client = TestClient(app, raise_server_exceptions=False)
    for method, path, status in [
        ("GET", "/ok", 200),
        ("GET", "/api-error", 409),
        ("POST", "/validated", 400),
        ("GET", "/missing", 404),
        ("DELETE", "/ok", 405),
        ("GET", "/crash", 500),
    ]:
        response = client.request(method, path, json={"size": "big"})
        assert response.status_code == status, path
        assert re.fullmatch(r"req_[0-9a-f]{24}", response.headers["x-request-id"]), path
        if status >= 400:
            assert "error" in response.json(), path
    same = client.get("/ok")
    assert same.json()["request_id"] == same.headers["x-request-id"]  # the id bound is the id sent


def test_a_sane_incoming_id_is_echoed_and_bound(app, caplog):
    client = TestClient(app)
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(ContextFilter())
    response = client.get("/ok", headers={"x-request-id": "client-trace.42"})
    assert response.headers["x-request-id"] == "client-trace.42"
    assert response.json() == {"request_id": "client-trace.42"}
    handler_line = next(r for r in caplog.records if r.getMessage() == "in handler")
    access_line = next(r for r in caplog.records if r.name == "darkroom.api.access")
    assert handler_line.request_id == access_line.request_id == "client-trace.42"
    assert (access_line.method, access_line.path, access_line.status) == ("GET", "/ok", 200)

    refused = client.get("/ok", headers={"x-request-id": "not ok\t"})
    assert re.fullmatch(r"req_[0-9a-f]{24}", refused.headers["x-request-id"])


def test_the_unhandled_error_line_carries_the_request_id(app, caplog):
    client = TestClient(app, raise_server_exceptions=False)
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(ContextFilter())
    response = client.get("/crash", headers={"x-request-id": "crash-1"})
    assert (response.status_code, response.headers["x-request-id"]) == (500, "crash-1")
    crash = next(r for r in caplog.records if r.getMessage().startswith("unhandled error"))
    assert crash.request_id == "crash-1" and crash.exc_info
    access = next(r for r in caplog.records if r.name == "darkroom.api.access")
    assert (access.request_id, access.status) == ("crash-1", 500)
