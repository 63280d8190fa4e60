"""Fetching an image URL (`input_reference[image_url]`) through the SSRF-safe client, against a
real local HTTP server: the limits, the one deadline over the whole fetch, and the fetch slots."""

from __future__ import annotations

import asyncio

import pytest

from api.errors import APIError
from api.image_fetch import MAX_URL_CHARS, URL_PARAM, FetchSlots, fetch_image
from darkroom.settings import Settings
from tests.image_server import png_bytes, serve_images

PNG = png_bytes((32, 16))
MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def host():
    with serve_images(image=PNG, too_large_bytes=MAX_BYTES * 2, slow_s=3.0, drip_s=0.1) as served:
        yield served


def allowed(**overrides) -> Settings:
    fields = {
        "max_upload_bytes": MAX_BYTES,
        "image_url_allow_http": True,
        "image_url_allowed_hosts": ("127.0.0.1",),
        "image_url_timeout_s": 1.0,
    }
    return Settings(**(fields | overrides))


def fetch(url: str, settings: Settings) -> bytes:
    return asyncio.run(fetch_image(url, settings, FetchSlots(settings), "owner-a"))


def refused(url: str, settings: Settings) -> APIError:
    with pytest.raises(APIError) as error:
        fetch(url, settings)
    return error.value


def test_an_allowed_url_is_fetched(host):
    assert fetch(host.url("/image.png"), allowed()) == PNG


@pytest.mark.parametrize(
    "settings,expected",
    [
        (Settings(image_url_allow_http=True), "DARKROOM_IMAGE_URL_ALLOWED_HOSTS"),  # loopback
        (Settings(image_url_allowed_hosts=("127.0.0.1",)), "DARKROOM_IMAGE_URL_ALLOW_HTTP"),  # plain http
    ],
)
def test_loopback_and_plain_http_are_refused_unless_allowed_before_any_request(host, settings, expected):
    before = len(host.requests)
    error = refused(host.url("/image.png"), settings)
    assert (error.status, error.param, error.code) == (400, URL_PARAM, "invalid_image_url")
    assert expected in error.message
    assert len(host.requests) == before  # refused before connecting


@pytest.mark.parametrize("url", ["http://10.0.0.7/a.png", "https://169.254.169.254/latest", "ftp://example.com/a.png"])
def test_private_link_local_and_other_schemes_are_refused(url):
    error = refused(url, Settings(image_url_allow_http=True))
    assert (error.status, error.code) == (400, "invalid_image_url")


def test_a_url_longer_than_any_real_one_is_refused_before_any_request(host):
    before = len(host.requests)
    error = refused(host.url("/image.png?" + "a" * MAX_URL_CHARS), allowed())
    assert (error.status, error.param, error.code) == (400, URL_PARAM, "invalid_image_url")
    assert len(host.requests) == before


@pytest.mark.parametrize(
    "path,status,code",
    [
        ("/declared-too-large", 413, "file_too_large"),
        ("/streamed-too-large", 413, "file_too_large"),
        ("/redirect", 400, "image_url_unreachable"),
        ("/missing", 400, "image_url_unreachable"),
    ],
)
def test_bad_answers_are_refused_naming_the_url(host, path, status, code):
    error = refused(host.url(path), allowed())
    assert (error.status, error.param, error.code) == (status, URL_PARAM, code)


def test_a_slow_host_is_given_up_on_at_the_time_limit(host):
    error = refused(host.url("/slow"), allowed(image_url_timeout_s=0.5))
    assert (error.status, error.param, error.code) == (400, URL_PARAM, "image_url_timeout")


def test_a_host_that_drips_its_image_is_given_up_on_at_the_overall_limit(host):
    # Every piece of the body comes within 0.25 s; only the deadline over the whole fetch stops it.
    assert fetch(host.url("/drip"), allowed(image_url_timeout_s=5.0)) == PNG
    error = refused(host.url("/drip"), allowed(image_url_timeout_s=0.6))
    assert (error.status, error.code) == (400, "image_url_timeout")


def test_a_host_that_drips_its_headers_is_given_up_on_at_the_overall_limit(host):
    # A byte of the status line and headers every 0.1 s, some 6 s for them all: a timeout per
    # read never fires, so only a deadline over connect, headers and body ends the fetch, and
    # the host sees the client leave before it has sent all its headers.
    error = refused(host.url("/drip-headers"), allowed(image_url_timeout_s=1.0))
    assert (error.status, error.param, error.code) == (400, URL_PARAM, "image_url_timeout")
    assert host.hung_up.wait(timeout=10)


def test_a_host_that_is_not_listening_is_unreachable():
    error = refused("http://127.0.0.1:9/a.png", allowed())
    assert (error.status, error.code) == (400, "image_url_unreachable")


def test_fetches_past_a_keys_share_or_the_servers_are_refused_at_once_then_freed():
    slots = FetchSlots(allowed(image_url_max_fetches=3, image_url_max_fetches_per_key=2, image_url_timeout_s=7.5))
    with slots.taken("a"), slots.taken("a"):
        with pytest.raises(APIError) as busy_key:
            with slots.taken("a"):
                pass
        with slots.taken("b"):
            with pytest.raises(APIError) as busy_server:
                with slots.taken("c"):
                    pass
    assert (busy_key.value.status, busy_key.value.code) == (429, "too_many_image_url_fetches")
    assert (busy_server.value.status, busy_server.value.code) == (503, "image_url_fetches_busy")
    for error in (busy_key.value, busy_server.value):
        # A slot frees within one fetch's deadline; the message and the header say the same.
        assert error.headers["Retry-After"] == "8" and "Retry after 8 s." in error.message
    assert not slots.in_flight
    with slots.taken("a"), slots.taken("a"), slots.taken("c"):
        pass
