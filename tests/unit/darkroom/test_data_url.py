"""`data:` URLs: what is read from one, what is refused and why, and that the header is the only
part scanned."""

from __future__ import annotations

import base64

import pytest

from darkroom.data_url import (
    MAX_HEADER_CHARS,
    BadDataURL,
    DataURL,
    DataURLTooLarge,
    data_url_chars,
    decode_payload,
    parse_image_data_url,
)


def test_an_image_data_url_gives_its_media_type_and_bytes():
    url = "DATA:Image/PNG;name=a.png;base64," + base64.b64encode(b"\x89PNG...").decode()
    parsed = parse_image_data_url(url, max_bytes=64)
    assert parsed.media_type == "image/png"
    assert decode_payload(parsed) == b"\x89PNG..."


@pytest.mark.parametrize(
    "url,reason",
    [
        ("https://example.com/a.png", "does not start with 'data:'"),
        ("data:text/plain;base64,aGk=", "not an image/ type"),
        ("data:image/png,raw", "not base64-encoded"),
        ("data:image/png;base64", "no ','"),
    ],
)
def test_what_is_not_an_image_data_url_is_refused_with_the_reason(url, reason):
    with pytest.raises(BadDataURL, match=reason):
        parse_image_data_url(url, max_bytes=64)


def test_a_header_of_millions_of_parameters_is_refused_by_its_length_alone():
    # The shape that stalled the API for seconds under a regex: 20 MB of ';x' and no comma.
    url = "data:image/png" + ";x" * 10_000_000
    with pytest.raises(BadDataURL, match=f"within its first {MAX_HEADER_CHARS} characters"):
        parse_image_data_url(url, max_bytes=64)


def test_the_payload_is_measured_before_it_is_decoded():
    limit = 3000
    fits = "data:image/png;base64," + "A" * (4 * limit // 3)
    assert len(decode_payload(parse_image_data_url(fits, max_bytes=limit))) == limit
    with pytest.raises(DataURLTooLarge):
        parse_image_data_url(fits + "A" * 8, max_bytes=limit)
    assert len(fits) <= data_url_chars(limit)


def test_a_payload_that_is_not_base64_is_refused_when_decoded():
    with pytest.raises(BadDataURL, match="not valid base64"):
        decode_payload(DataURL("image/png", "not*base64!"))
