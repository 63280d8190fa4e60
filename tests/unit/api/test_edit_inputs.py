"""An edit's images and mask from either form (file parts, or the JSON form's references) become the
same references, with the same refusals, before anything is read."""

from __future__ import annotations

import io

import pytest
from starlette.datastructures import UploadFile

from api.edit_inputs import EditRefs, edit_refs
from api.errors import APIError
from api.input_reference import ImageRef
from api.schemas import ImageEditRequest
from darkroom.settings import Settings
from pipelines.spec.registry import get_model

EDIT = get_model("tiny-qwen-image-edit")
SETTINGS = Settings()
URL = "https://example.com/a.png"


def part(name: str = "a.png") -> UploadFile:
    return UploadFile(io.BytesIO(b"png"), filename=name)


def body(**fields) -> ImageEditRequest:
    return ImageEditRequest(prompt="make it blue", **fields)


def refs(request: ImageEditRequest, parts: dict | None = None, *, json_body: bool = True) -> EditRefs:
    return edit_refs(request, parts or {}, EDIT, SETTINGS, json_body=json_body)


def refused(request: ImageEditRequest, parts: dict | None = None, *, json_body: bool = True) -> APIError:
    with pytest.raises(APIError) as error:
        refs(request, parts, json_body=json_body)
    return error.value


def test_file_parts_and_references_become_the_same_refs():
    image, mask = part(), part("mask.png")
    assert refs(body(), {"image": [image], "mask": [mask]}, json_body=False) == EditRefs(
        [ImageRef("image", file=image)], ImageRef("mask", file=mask)
    )
    request = body(images=[{"image_url": URL}, {"file_id": "file-1"}])
    expected = [ImageRef("images[0]", image_url=URL), ImageRef("images[1]", file_id="file-1")]
    assert refs(request) == EditRefs(expected, None)
    masked = body(images=[{"file_id": "file-1"}], mask={"image_url": "data:image/png;base64,AAAA"})
    assert refs(masked).mask == ImageRef("mask", image_url="data:image/png;base64,AAAA")


@pytest.mark.parametrize(
    "fields,parts,json_body,param,code",
    [
        ({}, {}, True, "images", "missing_required_parameter"),
        ({}, {}, False, "image", "missing_required_parameter"),
        ({"images": [{"image_url": URL}]}, {"image": 1}, False, "images", "invalid_value"),
        ({"images": [{"image_url": URL}], "mask": {"image_url": URL}}, {"mask": 1}, False, "mask", "invalid_value"),
        ({"images": [{"image_url": URL}] * 4}, {}, True, "images", "invalid_value"),  # the model takes 3
        ({}, {"image": 4}, False, "image", "invalid_value"),
        ({}, {"image": 1, "mask": 2}, False, "mask", "invalid_value"),
        ({"images": [{"image_url": URL}, {}]}, {}, True, "images[1].image_url", "missing_required_parameter"),
        ({"images": [{"image_url": URL, "file_id": "file-1"}]}, {}, True, "images[0]", "invalid_value"),
        ({"images": [{"image_url": URL}], "mask": {}}, {}, True, "mask.image_url", "missing_required_parameter"),
        # A mask applies to one image: refused before either is read.
        ({"images": [{"image_url": URL}] * 2, "mask": {"image_url": URL}}, {}, True, "mask", "unsupported_parameter"),
    ],
)
def test_refusals_name_the_field(fields, parts, json_body, param, code):
    sent = {name: [part() for _ in range(count)] for name, count in parts.items()}
    error = refused(body(**fields), sent, json_body=json_body)
    assert (error.status, error.param, error.code) == (400, param, code)


def test_the_json_form_takes_only_references():
    with pytest.raises(ValueError, match="images.0.url"):
        body(images=[{"url": URL}])
    with pytest.raises(ValueError, match="images"):
        body(images=[])
    with pytest.raises(ValueError, match="image"):
        body(image=[{"image_url": URL}])  # `image` is the multipart form's file part
