"""Images named by `file_id` and the JSON form of `POST /v1/images/edits`, through the official SDK
on the live stack: a file as a video's `input_reference` and as an edit's images and mask makes
what the same image sent as a file part makes, byte for byte; a JSON edit with data: URLs and file
ids makes what the multipart edit makes; and a reference that cannot be used (another key's file,
a deleted one, a batch file, one that is not an image, a bad URL) is refused naming the field,
with no job and no input stored."""

from __future__ import annotations

import base64
import io

import numpy as np
import openai
import pytest
from openai.types import ImagesResponse
from PIL import Image

from tests.integration.conftest import KEY_A, KEY_B

EDIT, I2V = "tiny-qwen-image-edit", "tiny-wan-i2v"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _picture(size=(96, 48), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    return _png(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)))


def _mask(size=(96, 48)) -> bytes:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))  # the left half is edited
    return _png(mask)


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _upload(client: openai.OpenAI, data: bytes, purpose: str = "vision") -> str:
    return client.files.create(file=("image.png", data, "image/png"), purpose=purpose).id


def _json_edit(client: openai.OpenAI, **body) -> ImagesResponse:
    """The JSON form, sent by the SDK's own client (its `images.edit` always sends multipart)."""
    body = {"model": EDIT, "prompt": "a boat on the lake", **body}
    return client.post("/images/edits", body=body, cast_to=ImagesResponse)


def test_a_file_id_as_input_reference_makes_the_same_video_as_the_file_part(client):
    image = _picture((32, 16), seed=4)
    by_id = client.videos.create_and_poll(
        model=I2V,
        prompt="the field sways",
        extra_body={"input_reference": {"file_id": _upload(client, image)}, "seed": 5},
        poll_interval_ms=50,
    )
    as_part = client.videos.create_and_poll(
        model=I2V, prompt="the field sways", input_reference=("ref.png", image, "image/png"), extra_body={"seed": 5},
        poll_interval_ms=50,
    )
    assert (by_id.status, by_id.size) == ("completed", "96x48")
    assert client.videos.download_content(by_id.id).read() == client.videos.download_content(as_part.id).read()


def test_a_json_edit_with_a_file_id_and_a_data_url_makes_what_multipart_makes(client):
    first, second = _picture(seed=1), _picture(seed=2)
    multipart = client.images.edit(
        model=EDIT, image=[("a.png", first, "image/png"), ("b.png", second, "image/png")], prompt="a boat on the lake",
        extra_body={"seed": 3},
    )
    as_json = _json_edit(
        client, images=[{"file_id": _upload(client, first, "user_data")}, {"image_url": _data_url(second)}], seed=3
    )
    assert (as_json.size, as_json.output_format) == (multipart.size, "png")
    assert as_json.data[0].b64_json == multipart.data[0].b64_json


def test_a_masked_json_edit_with_the_mask_by_file_id(client):
    picture, mask = _picture(seed=6), _mask()
    multipart = client.images.edit(
        model=EDIT, image=("photo.png", picture, "image/png"), mask=("mask.png", mask, "image/png"),
        prompt="a boat on the lake", extra_body={"seed": 3},
    )
    mask_id = _upload(client, mask)
    as_json = _json_edit(client, images=[{"image_url": _data_url(picture)}], mask={"file_id": mask_id}, seed=3)
    assert as_json.data[0].b64_json == multipart.data[0].b64_json
    # The mask took effect: outside it, the input's own pixels.
    edited = np.asarray(Image.open(io.BytesIO(base64.b64decode(as_json.data[0].b64_json))).convert("RGB"))
    assert np.array_equal(edited[:, 48:], np.asarray(Image.open(io.BytesIO(picture)))[:, 48:])


def test_a_json_edit_is_checked_as_a_multipart_one(client, nothing_written):
    # The same rule, the same refusal, in either form.
    with pytest.raises(openai.BadRequestError) as error:
        _json_edit(client, images=[{"image_url": _data_url(_picture())}], background="transparent")
    assert (error.value.param, error.value.code) == ("background", "unsupported_parameter")
    with pytest.raises(openai.BadRequestError) as error:
        wrong_size = _data_url(_mask((64, 48)))
        _json_edit(client, images=[{"image_url": _data_url(_picture())}], mask={"image_url": wrong_size})
    assert (error.value.param, error.value.code) == ("mask", "invalid_mask")


@pytest.fixture(scope="module")
def unusable(stack) -> dict[str, str]:
    """File ids KEY_A cannot use as an image: another key's, a deleted one, a batch file, bytes
    that are not an image."""
    mine, theirs = stack.client(KEY_A), stack.client(KEY_B)
    deleted = _upload(mine, _picture())
    mine.files.delete(deleted)
    return {
        "theirs": _upload(theirs, _picture()),
        "deleted": deleted,
        "batch": mine.files.create(file=("r.jsonl", b"{}\n"), purpose="batch").id,
        "text": mine.files.create(file=("notes.txt", b"not an image"), purpose="user_data").id,
    }


CASES = [("theirs", 404, "not_found"), ("deleted", 404, "not_found"), ("batch", 400, "invalid_file_purpose"),
         ("text", 400, "invalid_image")]


@pytest.mark.parametrize("case,status,code", CASES)
def test_an_unusable_file_is_refused_as_an_input_reference(client, nothing_written, unusable, case, status, code):
    with pytest.raises(openai.APIStatusError) as error:
        client.videos.create(model=I2V, prompt="x", extra_body={"input_reference": {"file_id": unusable[case]}})
    assert (error.value.status_code, error.value.param, error.value.code) == (status, "input_reference.file_id", code)


@pytest.mark.parametrize("case,status,code", CASES)
def test_an_unusable_file_is_refused_as_an_edit_image_or_mask(client, nothing_written, unusable, case, status, code):
    usable = _upload(client, _picture())
    for body, param in [
        ({"images": [{"file_id": usable}, {"file_id": unusable[case]}]}, "images[1].file_id"),
        ({"images": [{"file_id": usable}], "mask": {"file_id": unusable[case]}}, "mask.file_id"),
    ]:
        with pytest.raises(openai.APIStatusError) as error:
            _json_edit(client, **body)
        assert (error.value.status_code, error.value.param, error.value.code) == (status, param, code)


@pytest.mark.parametrize(
    "body,param,code",
    [
        ({}, "images", "missing_required_parameter"),
        ({"images": [{"url": "https://example.com/a.png"}]}, "images[0].url", "unknown_parameter"),
        ({"images": [{"image_url": "https://127.0.0.1/a.png"}]}, "images[0].image_url", "invalid_image_url"),
        ({"images": [{"image_url": "data:image/png;base64,!!"}]}, "images[0].image_url", "invalid_image_url"),
        ({"images": [{"image_url": "https://example.com/a.png"}] * 2, "mask": {"file_id": "file-x"}}, "mask",
         "unsupported_parameter"),
        ({"image": [{"image_url": "https://example.com/a.png"}]}, "image", "unknown_parameter"),
    ],
)
def test_bad_json_edits_name_the_field(client, nothing_written, body, param, code):
    with pytest.raises(openai.BadRequestError) as error:
        _json_edit(client, **body)
    assert (error.value.param, error.value.code) == (param, code)
