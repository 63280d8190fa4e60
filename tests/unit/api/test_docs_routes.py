"""`/openapi.json`, `/docs` and `/redoc` need an API key like every `/v1` route, unless the
setting opens them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from darkroom.settings import Settings

PATHS = ("/openapi.json", "/docs", "/redoc")


@pytest.fixture
def settings(tmp_path) -> dict:
    return {"data_dir": tmp_path, "api_keys": ("sk-docs",)}


@pytest.mark.parametrize("path", PATHS)
def test_the_api_description_needs_a_key(settings, path):
    client = TestClient(create_app(Settings(**settings)))
    refused = client.get(path)
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "missing_api_key")
    assert client.get(path, headers={"authorization": "Bearer sk-wrong"}).status_code == 401
    assert client.get(path, headers={"authorization": "Bearer sk-docs"}).status_code == 200


@pytest.mark.parametrize("path", PATHS)
def test_the_setting_opens_it(settings, path):
    client = TestClient(create_app(Settings(**settings, openapi_public=True)))
    assert client.get(path).status_code == 200


def test_the_description_lists_the_routes_and_not_itself(settings):
    client = TestClient(create_app(Settings(**settings)))
    paths = client.get("/openapi.json", headers={"authorization": "Bearer sk-docs"}).json()["paths"]
    assert "/v1/videos" in paths and "/openapi.json" not in paths and "/docs" not in paths
