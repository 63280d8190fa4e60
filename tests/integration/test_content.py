"""Serving bytes through the live stack: HTTP Range on `/content` (videos and images), the
presigned-redirect mode checked with httpx and with the official SDK, and fast-start MP4s."""

from __future__ import annotations

import struct
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from tests.integration.conftest import KEY_A

AUTH = {"authorization": f"Bearer {KEY_A}"}


@pytest.fixture(scope="module")
def video(stack) -> tuple[str, bytes]:
    """One finished video and its bytes as the SDK downloads them whole."""
    client = stack.client(KEY_A)
    done = client.videos.create_and_poll(model="tiny-wan", prompt="a heron", size="64x64", seconds="2")
    assert done.status == "completed", done.error
    return done.id, client.videos.download_content(done.id).read()


@pytest.fixture(scope="module")
def image(stack) -> tuple[str, bytes]:
    result = stack.client(KEY_A).images.generate(
        model="tiny-qwen-image", prompt="a kite", size="64x48", response_format="url"
    )
    url = result.data[0].url
    whole = httpx.get(url, headers=AUTH)
    assert whole.status_code == 200
    return url.split("/images/")[1].split("/")[0], whole.content


def _get(stack, path: str, range_header: str | None = None, **headers) -> httpx.Response:
    if range_header is not None:
        headers["range"] = range_header
    return httpx.get(f"{stack.base_url}{path}", headers=AUTH | headers, timeout=30)


def test_a_full_download_says_ranges_are_accepted(stack, video):
    video_id, mp4 = video
    response = _get(stack, f"/videos/{video_id}/content")
    assert response.status_code == 200
    assert response.content == mp4
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-length"] == str(len(mp4))
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["etag"].startswith('"')


def test_ranges_answer_206_with_the_same_bytes_as_the_full_download(stack, video):
    video_id, mp4 = video
    size = len(mp4)
    middle = size // 3
    for header, expected_start, expected_end in [
        ("bytes=0-0", 0, 1),
        (f"bytes={middle}-{middle + 99}", middle, middle + 100),
        (f"bytes={middle}-", middle, size),
        ("bytes=-64", size - 64, size),
        (f"bytes=10-{size * 2}", 10, size),  # a last byte past the end is cut to the end
    ]:
        response = _get(stack, f"/videos/{video_id}/content", header)
        assert response.status_code == 206, (header, response.text)
        assert response.content == mp4[expected_start:expected_end], header
        assert response.headers["content-length"] == str(expected_end - expected_start), header
        assert response.headers["content-range"] == f"bytes {expected_start}-{expected_end - 1}/{size}", header
        assert response.headers["accept-ranges"] == "bytes"


def test_an_unsatisfiable_range_is_a_416_naming_the_size(stack, video):
    video_id, mp4 = video
    response = _get(stack, f"/videos/{video_id}/content", f"bytes={len(mp4)}-")
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(mp4)}"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.json()["error"]["code"] == "range_not_satisfiable"
    # The SDK surfaces it as an ordinary API error.
    with pytest.raises(openai.APIStatusError) as error:
        stack.client(KEY_A).videos.download_content(video_id, extra_headers={"range": f"bytes={len(mp4) + 5}-"})
    assert error.value.status_code == 416


@pytest.mark.parametrize("header", ["bytes=0-1,5-9", "bytes=9-2", "bytes=abc", "frames=0-3", "bytes=-"])
def test_a_malformed_or_multi_range_is_ignored(stack, video, header):
    video_id, mp4 = video
    response = _get(stack, f"/videos/{video_id}/content", header)
    assert (response.status_code, response.content) == (200, mp4)
    assert "content-range" not in response.headers


def test_if_range_with_a_stale_etag_gets_the_whole_body(stack, video):
    video_id, mp4 = video
    etag = _get(stack, f"/videos/{video_id}/content").headers["etag"]
    current = _get(stack, f"/videos/{video_id}/content", "bytes=0-9", **{"if-range": etag})
    assert (current.status_code, current.content) == (206, mp4[:10])
    stale = _get(stack, f"/videos/{video_id}/content", "bytes=0-9", **{"if-range": '"stale"'})
    assert (stale.status_code, stale.content) == (200, mp4)


def test_image_content_serves_ranges_too(stack, image):
    image_id, png = image
    whole = _get(stack, f"/images/{image_id}/content")
    assert whole.headers["accept-ranges"] == "bytes"
    part = _get(stack, f"/images/{image_id}/content", "bytes=8-23")
    assert (part.status_code, part.content) == (206, png[8:24])
    assert part.headers["content-range"] == f"bytes 8-23/{len(png)}"
    suffix = _get(stack, f"/images/{image_id}/content", "bytes=-12")
    assert (suffix.status_code, suffix.content) == (206, png[-12:])
    assert _get(stack, f"/images/{image_id}/content", f"bytes={len(png)}-").status_code == 416


def test_another_keys_range_request_is_a_404(stack, video):
    video_id, _ = video
    response = httpx.get(
        f"{stack.base_url}/videos/{video_id}/content", headers={"authorization": "Bearer sk-test-tenant-b", "range": "bytes=0-1"}
    )
    assert response.status_code == 404


def _top_level_boxes(mp4: bytes) -> list[bytes]:
    """The MP4's top-level box types in file order (ISO BMFF: 32-bit size, type; size 1 = 64-bit)."""
    kinds, offset = [], 0
    while offset + 8 <= len(mp4):
        size, kind = struct.unpack(">I4s", mp4[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", mp4[offset + 8 : offset + 16])[0]
        elif size == 0:  # the box runs to the end of the file
            size = len(mp4) - offset
        assert size >= 8, f"corrupt box {kind!r} at {offset}"
        kinds.append(kind)
        offset += size
    assert offset == len(mp4), "boxes do not tile the file"
    return kinds


def test_a_produced_mp4_has_its_index_before_its_media(video):
    _, mp4 = video
    kinds = _top_level_boxes(mp4)
    assert kinds[0] == b"ftyp"
    assert b"moov" in kinds and b"mdat" in kinds
    assert kinds.index(b"moov") < kinds.index(b"mdat"), kinds


def test_redirect_mode_answers_307_to_a_presigned_s3_url(stack, spawn_api, video, image):
    video_id, mp4 = video
    image_id, png = image
    base = spawn_api({"DARKROOM_CONTENT_REDIRECT": "true", "DARKROOM_CONTENT_REDIRECT_TTL_S": "120"})
    s3 = urlsplit(stack.env["DARKROOM_S3_ENDPOINT_URL"])

    response = httpx.get(f"{base}/videos/{video_id}/content", headers=AUTH, follow_redirects=False)
    assert response.status_code == 307
    location = urlsplit(response.headers["location"])
    assert (location.scheme, location.netloc) == (s3.scheme, s3.netloc)
    assert location.path.endswith(f"/outputs/{video_id}/1/video.mp4")
    assert "X-Amz-Expires=120" in location.query
    assert response.headers["cache-control"] == "no-store"
    # Ownership is still checked before any URL is handed out.
    other = httpx.get(f"{base}/videos/{video_id}/content", headers={"authorization": "Bearer sk-test-tenant-b"})
    assert other.status_code == 404

    # The SDK follows the redirect (and drops its bearer key on the way to another origin).
    client = openai.OpenAI(base_url=base, api_key=KEY_A, max_retries=0)
    assert client.videos.download_content(video_id).read() == mp4
    # A Range goes along with the redirect, and S3 answers it.
    ranged = httpx.get(
        f"{base}/videos/{video_id}/content", headers=AUTH | {"range": "bytes=100-199"}, follow_redirects=True
    )
    assert (ranged.status_code, ranged.content) == (206, mp4[100:200])

    image_redirect = httpx.get(f"{base}/images/{image_id}/content", headers=AUTH, follow_redirects=False)
    assert image_redirect.status_code == 307
    assert httpx.get(image_redirect.headers["location"]).content == png
