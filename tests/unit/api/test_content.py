"""`api.content.stream_blob` on a small app over a real local blob store: whole bodies, ranges,
416, If-Range, and the redirect setting (which a local store ignores, saying so once at start)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from api.app import create_app
from api.content import stream_blob
from api.errors import install_error_handlers
from darkroom.settings import Settings
from storage.blobs import LocalBlobStore

DATA = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def store(tmp_path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("outputs/job/video.mp4", DATA, "video/mp4")
    return store


def make_client(store, **settings) -> TestClient:
    services = SimpleNamespace(settings=Settings(**settings), blobs=store)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/content/{key:path}")
    def content(key: str, request: Request):
        return stream_blob(request, services, key, what="the test blob")

    return TestClient(app)


def test_the_whole_body_says_ranges_are_accepted(store):
    response = make_client(store).get("/content/outputs/job/video.mp4")
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["content-length"] == str(len(DATA))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["etag"] == store.head("outputs/job/video.mp4").etag


@pytest.mark.parametrize(
    "header,start,end",
    [("bytes=100-199", 100, 200), ("bytes=10000-", 10000, 10240), ("bytes=-40", 10200, 10240), ("bytes=0-99999", 0, 10240)],
)
def test_a_range_answers_206_with_just_those_bytes(store, header, start, end):
    response = make_client(store).get("/content/outputs/job/video.mp4", headers={"range": header})
    assert response.status_code == 206
    assert response.content == DATA[start:end]
    assert response.headers["content-length"] == str(end - start)
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert response.headers["accept-ranges"] == "bytes"


def test_an_unsatisfiable_range_answers_416_with_the_size(store):
    response = make_client(store).get("/content/outputs/job/video.mp4", headers={"range": "bytes=10240-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(DATA)}"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=0-1,4-5", "bytes=9-3", "pages=1-2", "bytes=x-"])
def test_a_malformed_or_multi_range_gets_the_whole_body(store, header):
    response = make_client(store).get("/content/outputs/job/video.mp4", headers={"range": header})
    assert (response.status_code, response.content) == (200, DATA)


def test_if_range_honours_the_range_only_for_the_current_etag(store):
    client = make_client(store)
    etag = client.get("/content/outputs/job/video.mp4").headers["etag"]
    same = client.get("/content/outputs/job/video.mp4", headers={"range": "bytes=0-9", "if-range": etag})
    assert (same.status_code, same.content) == (206, DATA[:10])
    stale = client.get("/content/outputs/job/video.mp4", headers={"range": "bytes=0-9", "if-range": '"old"'})
    assert (stale.status_code, stale.content) == (200, DATA)


def test_a_missing_blob_is_a_404(store):
    response = make_client(store).get("/content/outputs/job/gone.mp4", headers={"range": "bytes=0-1"})
    assert (response.status_code, response.json()["error"]["code"]) == (404, "content_not_found")


def test_redirect_mode_streams_from_a_local_store(store):
    response = make_client(store, content_redirect=True).get(
        "/content/outputs/job/video.mp4", headers={"range": "bytes=1-2"}, follow_redirects=False
    )
    assert (response.status_code, response.content) == (206, DATA[1:3])


def test_redirect_mode_on_a_local_store_is_logged_once_at_start(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="darkroom.api")
    app = create_app(Settings(data_dir=tmp_path, content_redirect=True))
    with TestClient(app):
        pass
    lines = [r.getMessage() for r in caplog.records if "DARKROOM_CONTENT_REDIRECT" in r.getMessage()]
    assert len(lines) == 1 and "no effect with the local blob store" in lines[0]


def head_client(store, **settings) -> TestClient:
    services = SimpleNamespace(settings=Settings(**settings), blobs=store)
    app = FastAPI()
    install_error_handlers(app)

    @app.api_route("/content/{key:path}", methods=["GET", "HEAD"])
    def content(key: str, request: Request):
        return stream_blob(request, services, key, what="the test blob", headers={"x-extra": "1"})

    return TestClient(app)


@pytest.mark.parametrize("range_header", [None, "bytes=100-199", "bytes=0-1,4-5"])
def test_head_answers_the_headers_get_would_without_a_body(store, range_header):
    client = head_client(store)
    headers = {} if range_header is None else {"range": range_header}
    got = client.get("/content/outputs/job/video.mp4", headers=headers)
    head = client.head("/content/outputs/job/video.mp4", headers=headers)
    assert (head.status_code, head.content) == (got.status_code, b"")
    for name in ("content-type", "content-length", "content-range", "accept-ranges", "etag", "x-extra"):
        assert head.headers.get(name) == got.headers.get(name), name


def test_head_with_an_unsatisfiable_range_is_a_416(store):
    head = head_client(store).head("/content/outputs/job/video.mp4", headers={"range": "bytes=99999-"})
    assert (head.status_code, head.headers["content-range"]) == (416, f"bytes */{len(DATA)}")


def test_head_never_opens_the_blob(store, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("HEAD read the blob")

    monkeypatch.setattr(store, "iter_chunks", fail)
    assert head_client(store).head("/content/outputs/job/video.mp4").status_code == 200
