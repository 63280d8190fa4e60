"""`/content?variant=thumbnail|spritesheet` and HEAD on `/content`, through the live stack: the
worker makes the stills next to the MP4, the SDK downloads them, and they are served with the
same Range, ETag and redirect machinery as the video."""

from __future__ import annotations

import io

import httpx
import openai
import pytest
from PIL import Image
from sqlalchemy import create_engine, select, update

from storage.models import Job
from tests.integration.conftest import KEY_A

AUTH = {"authorization": f"Bearer {KEY_A}"}
# tiny-wan runs at 8 fps: 1 s is 9 frames (Wan's 4k+1), so the spritesheet is a 3x3 grid of all.
LAYOUT = "columns=3; rows=3; tile=64x64; frames=0,1,2,3,4,5,6,7,8"


@pytest.fixture(scope="module")
def video(stack) -> str:
    done = stack.client(KEY_A).videos.create_and_poll(model="tiny-wan", prompt="a heron", size="64x64", seconds="1")
    assert done.status == "completed", done.error
    return done.id


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _url(stack, path: str) -> str:
    return f"{stack.base_url}{path}"


def test_the_sdk_downloads_a_webp_thumbnail_of_the_video_size(client, video):
    raw = client.videos.with_raw_response.download_content(video, variant="thumbnail")
    assert raw.headers["content-type"] == "image/webp"
    data = raw.content
    assert raw.headers["content-length"] == str(len(data))
    image = _decoded(data)
    assert (image.format, image.size) == ("WEBP", (64, 64))
    assert client.videos.download_content(video, variant="thumbnail").read() == data


def test_the_spritesheet_is_a_jpeg_grid_whose_layout_is_in_a_header(client, video):
    raw = client.videos.with_raw_response.download_content(video, variant="spritesheet")
    assert raw.headers["content-type"] == "image/jpeg"
    assert raw.headers["x-spritesheet-layout"] == LAYOUT
    image = _decoded(raw.content)
    assert (image.format, image.size) == ("JPEG", (3 * 64, 3 * 64))


def test_the_default_variant_is_still_the_mp4(client, video):
    video_bytes = client.videos.download_content(video, variant="video").read()
    assert video_bytes == client.videos.download_content(video).read()
    assert video_bytes[4:8] == b"ftyp"


@pytest.mark.parametrize("variant", ["thumbnail", "spritesheet"])
def test_variants_serve_ranges_and_if_range_like_the_video(stack, video, variant):
    path = _url(stack, f"/videos/{video}/content?variant={variant}")
    whole = httpx.get(path, headers=AUTH)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    etag, size = whole.headers["etag"], len(whole.content)
    part = httpx.get(path, headers=AUTH | {"range": "bytes=4-15", "if-range": etag})
    assert (part.status_code, part.content) == (206, whole.content[4:16])
    assert part.headers["content-range"] == f"bytes 4-15/{size}"
    assert httpx.get(path, headers=AUTH | {"range": f"bytes={size}-"}).status_code == 416


@pytest.mark.parametrize("variant", ["video", "thumbnail", "spritesheet"])
def test_head_on_video_content_answers_the_get_headers_without_a_body(stack, video, variant):
    path = _url(stack, f"/videos/{video}/content?variant={variant}")
    got = httpx.get(path, headers=AUTH)
    head = httpx.head(path, headers=AUTH)
    assert (head.status_code, head.content) == (200, b"")
    for name in ("content-type", "content-length", "accept-ranges", "etag", "x-spritesheet-layout"):
        assert head.headers.get(name) == got.headers.get(name), name
    assert head.headers["content-length"] == str(len(got.content))
    ranged = httpx.head(path, headers=AUTH | {"range": "bytes=-10"})
    assert (ranged.status_code, ranged.content) == (206, b"")
    assert ranged.headers["content-range"] == f"bytes {len(got.content) - 10}-{len(got.content) - 1}/{len(got.content)}"
    assert ranged.headers["content-length"] == "10"


def test_head_on_image_content_and_on_someone_elses_video(stack, client, video):
    url = client.images.generate(model="tiny-qwen-image", prompt="a kite", size="32x32", response_format="url").data[0].url
    got, head = httpx.get(url, headers=AUTH), httpx.head(url, headers=AUTH)
    assert (head.status_code, head.content, head.headers["content-type"]) == (200, b"", "image/png")
    assert (head.headers["content-length"], head.headers["etag"]) == (str(len(got.content)), got.headers["etag"])
    other = httpx.head(_url(stack, f"/videos/{video}/content"), headers={"authorization": "Bearer sk-test-tenant-b"})
    assert other.status_code == 404


def test_an_unknown_variant_is_an_openai_shaped_400(client, video):
    with pytest.raises(openai.BadRequestError) as error:
        client.videos.download_content(video, variant="poster")
    body = error.value.body
    assert (body["param"], body["code"]) == ("variant", "invalid_value")
    assert "'thumbnail'" in body["message"] and "'spritesheet'" in body["message"]


def test_a_video_made_before_variants_existed_says_so_with_a_404(stack, client):
    old = client.videos.create_and_poll(model="tiny-wan", prompt="made long ago", size="32x32", seconds="1")
    # What a row written by the worker before this change holds: only the MP4 and its facts.
    engine = create_engine(stack.env["DARKROOM_DATABASE_URL"])
    with engine.begin() as connection:
        job = connection.execute(select(Job).where(Job.id == old.id)).one()
        meta = {name: job.output_meta[name] for name in ("fps", "frames", "width", "height")}
        connection.execute(
            update(Job).where(Job.id == old.id).values(output_keys=job.output_keys[:1], output_meta=meta)
        )
    engine.dispose()
    for variant in ("thumbnail", "spritesheet"):
        with pytest.raises(openai.NotFoundError) as error:
            client.videos.download_content(old.id, variant=variant)
        assert (error.value.body["param"], error.value.body["code"]) == ("variant", "variant_not_available")
    assert client.videos.download_content(old.id).read()[4:8] == b"ftyp"


def test_a_remix_gets_its_own_stills(client, video):
    remix = client.videos.poll(client.videos.remix(video, prompt="a heron at dusk").id, poll_interval_ms=50)
    assert remix.status == "completed", remix.error
    thumbnail = client.videos.download_content(remix.id, variant="thumbnail").read()
    assert _decoded(thumbnail).size == (64, 64)
    assert thumbnail != client.videos.download_content(video, variant="thumbnail").read()
    raw = client.videos.with_raw_response.download_content(remix.id, variant="spritesheet")
    assert (raw.headers["x-spritesheet-layout"], _decoded(raw.content).size) == (LAYOUT, (192, 192))


def test_redirect_mode_sends_variants_to_their_own_presigned_urls(stack, spawn_api, client, video):
    base = spawn_api({"DARKROOM_CONTENT_REDIRECT": "true"})
    thumbnail = client.videos.download_content(video, variant="thumbnail").read()
    for variant, suffix in (("thumbnail", "/thumbnail.webp"), ("spritesheet", "/spritesheet.jpg")):
        for method in ("GET", "HEAD"):
            response = httpx.request(method, f"{base}/videos/{video}/content?variant={variant}", headers=AUTH)
            assert response.status_code == 307, (variant, method)
            assert response.headers["location"].split("?")[0].endswith(f"/outputs/{video}/1{suffix}")
    # The layout goes on the redirect too, since the presigned answer cannot carry it.
    sheet = httpx.get(f"{base}/videos/{video}/content?variant=spritesheet", headers=AUTH)
    assert sheet.headers["x-spritesheet-layout"] == LAYOUT
    sdk = openai.OpenAI(base_url=base, api_key=KEY_A, max_retries=0)
    assert sdk.videos.download_content(video, variant="thumbnail").read() == thumbnail
