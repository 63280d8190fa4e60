"""Image-to-video through the official SDK: `input_reference` as a file part, as
`input_reference[image_url]` (a data: URL, or an http URL on a local server that a spawned API
allow-lists) and as a JSON object; the video downloads as a real MP4 of the size and frame count
asked; a remix carries the input image; every bad reference is a 4xx naming the field, with no
job and no stored input left behind."""

from __future__ import annotations

import base64
import io

import av
import httpx
import openai
import pytest

from tests.image_server import png_bytes, serve_images
from tests.integration.conftest import KEY_A

MODEL = "tiny-wan-i2v"
URL_PARAM = "input_reference.image_url"
IMAGE = png_bytes((32, 16), "orange")  # 2:1; fitted to tiny-wan-i2v's 64x64 area: 96x48
DATA_URL = "data:image/png;base64," + base64.b64encode(IMAGE).decode()
# The stack's DARKROOM_MAX_UPLOAD_BYTES is 2 MiB.
TOO_LARGE = 2 * 1024 * 1024 + 1


def _probe(mp4: bytes) -> tuple[str, int, float, int, int]:
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return stream.codec_context.name, frames, float(stream.average_rate), stream.width, stream.height


def test_a_file_part_makes_a_video_in_the_images_aspect_ratio(client):
    video = client.videos.create_and_poll(
        model=MODEL,
        prompt="the orange field sways",
        input_reference=("ref.png", IMAGE, "image/png"),
        seconds="2",
        poll_interval_ms=50,
    )
    assert (video.status, video.error, video.model, video.size, video.seconds) == ("completed", None, MODEL, "96x48", "2")
    # 8 fps: 2 s is 16 frames, rounded up to Wan's 4k+1: 17.
    assert _probe(client.videos.download_content(video.id).read()) == ("h264", 17, 8.0, 96, 48)


def test_a_size_is_kept_and_no_model_picks_the_image_to_video_one(client):
    video = client.videos.create_and_poll(
        prompt="cropped to fit", input_reference=("ref.png", IMAGE, "image/png"), size="32x32", poll_interval_ms=50
    )
    assert (video.status, video.model, video.size, video.seconds) == ("completed", MODEL, "32x32", "1")
    assert _probe(client.videos.download_content(video.id).read()) == ("h264", 9, 8.0, 32, 32)


def test_a_data_url_through_extra_body(client):
    video = client.videos.create_and_poll(
        model=MODEL,
        prompt="from a data URL",
        extra_body={"input_reference": {"image_url": DATA_URL}, "seed": 5},
        poll_interval_ms=50,
    )
    assert (video.status, video.size) == ("completed", "96x48")
    # The same image as a file part, the same seed: the same video.
    as_file = client.videos.create_and_poll(
        model=MODEL,
        prompt="from a data URL",
        input_reference=("ref.png", IMAGE, "image/png"),
        extra_body={"seed": 5},
        poll_interval_ms=50,
    )
    assert client.videos.download_content(as_file.id).read() == client.videos.download_content(video.id).read()


def test_the_json_object_form(stack, client):
    response = httpx.post(
        f"{stack.base_url}/videos",
        json={"prompt": "json", "model": MODEL, "seconds": 1, "size": "48x32", "input_reference": {"image_url": DATA_URL}},
        headers={"authorization": f"Bearer {KEY_A}"},
    )
    assert response.status_code == 200, response.text
    video = client.videos.poll(response.json()["id"], poll_interval_ms=50)
    assert (video.status, video.size) == ("completed", "48x32")
    assert _probe(client.videos.download_content(video.id).read())[1:] == (9, 8.0, 48, 32)


@pytest.fixture(scope="module")
def image_host():
    with serve_images(image=IMAGE, too_large_bytes=TOO_LARGE, slow_s=4.0) as host:
        yield host


@pytest.fixture
def allowing_client(spawn_api) -> openai.OpenAI:
    """A client of a second API process that may fetch http URLs on 127.0.0.1 within 1 s."""
    base_url = spawn_api(
        {
            "DARKROOM_IMAGE_URL_ALLOW_HTTP": "true",
            "DARKROOM_IMAGE_URL_ALLOWED_HOSTS": "127.0.0.1",
            "DARKROOM_IMAGE_URL_TIMEOUT_S": "1",
        }
    )
    return openai.OpenAI(base_url=base_url, api_key=KEY_A, max_retries=0)


def test_an_http_url_on_an_allow_listed_host_is_fetched_at_submission(allowing_client, image_host, stack, nothing_written):
    url = image_host.url("/image.png")
    before = len(image_host.requests)
    with pytest.raises(openai.BadRequestError) as error:  # the stack's own API has no allow-list
        stack.client(KEY_A).videos.create(model=MODEL, prompt="x", extra_body={"input_reference": {"image_url": url}})
    assert (error.value.param, error.value.code) == (URL_PARAM, "invalid_image_url")
    assert len(image_host.requests) == before  # refused before any connection

    for bad_path, status, code in [
        ("/declared-too-large", 413, "file_too_large"),
        ("/streamed-too-large", 413, "file_too_large"),
        ("/slow", 400, "image_url_timeout"),
        ("/text", 400, "invalid_image"),
        ("/redirect", 400, "image_url_unreachable"),
        ("/missing", 400, "image_url_unreachable"),
    ]:
        with pytest.raises(openai.APIStatusError) as error:
            allowing_client.videos.create(
                model=MODEL, prompt="x", extra_body={"input_reference": {"image_url": image_host.url(bad_path)}}
            )
        assert (error.value.status_code, error.value.param, error.value.code) == (status, URL_PARAM, code), bad_path


def test_a_fetched_url_makes_the_video(allowing_client, client, image_host):
    created = allowing_client.videos.create(
        model=MODEL, prompt="fetched", extra_body={"input_reference": {"image_url": image_host.url("/image.png")}}
    )
    assert "/image.png" in image_host.requests
    video = client.videos.poll(created.id, poll_interval_ms=50)
    assert (video.status, video.size) == ("completed", "96x48")


@pytest.mark.parametrize(
    "kwargs,status,param,code",
    [
        ({"extra_body": {"input_reference": {"image_url": "https://127.0.0.1/a.png"}}}, 400, URL_PARAM, "invalid_image_url"),
        ({"extra_body": {"input_reference": {"image_url": "https://10.1.2.3/a.png"}}}, 400, URL_PARAM, "invalid_image_url"),
        ({"extra_body": {"input_reference": {"image_url": "data:image/png;base64,!!"}}}, 400, URL_PARAM, "invalid_image_url"),
        ({"extra_body": {"input_reference": {"image_url": "data:image/png;base64," + base64.b64encode(b"hello").decode()}}},
         400, URL_PARAM, "invalid_image"),
        ({"extra_body": {"input_reference": {"file_id": "file-abc"}}}, 404, "input_reference.file_id", "not_found"),
        ({"extra_body": {"input_reference": {"url": "https://example.com"}}}, 400, "input_reference.url", "unknown_parameter"),
        ({"input_reference": ("ref.gif", b"GIF89a", "image/gif")}, 400, "input_reference", "invalid_image"),
        ({"input_reference": ("ref.png", IMAGE, "image/png"), "extra_body": {"input_reference": {"image_url": DATA_URL}}},
         400, "input_reference", "invalid_value"),
        ({}, 400, "input_reference", "missing_required_parameter"),
    ],
)
def test_bad_references_name_the_field(client, nothing_written, kwargs, status, param, code):
    with pytest.raises(openai.APIStatusError) as error:
        client.videos.create(model=MODEL, prompt="x", **kwargs)
    assert (error.value.status_code, error.value.param, error.value.code) == (status, param, code)
    assert error.value.type == "invalid_request_error" and error.value.message


def test_a_remix_reruns_the_same_input_image(client):
    source = client.videos.create_and_poll(
        model=MODEL,
        prompt="a kite over the orange field",
        input_reference=("ref.png", IMAGE, "image/png"),
        extra_body={"seed": 99},
        poll_interval_ms=50,
    )
    assert source.status == "completed"
    same = client.videos.poll(client.videos.remix(source.id, prompt=source.prompt).id, poll_interval_ms=50)
    assert (same.status, same.remixed_from_video_id, same.size) == ("completed", source.id, source.size)
    # Same prompt, seed and first frame: the same video, byte for byte.
    assert client.videos.download_content(same.id).read() == client.videos.download_content(source.id).read()
    # The remix holds its own copy of the image: deleting the source does not break its remixes.
    client.videos.delete(source.id)
    again = client.videos.poll(client.videos.remix(same.id, prompt="a kite at dusk").id, poll_interval_ms=50)
    assert (again.status, again.error, again.size) == ("completed", None, source.size)
