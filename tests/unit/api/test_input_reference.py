"""Images named by reference (`input_reference` on video creates, an edit's JSON images and mask):
which form the request used, data: URLs and a file of the caller's by `file_id`. Fetching an image
URL: tests/unit/api/test_image_fetch.py."""

from __future__ import annotations

import asyncio
import base64

import pytest
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.errors import APIError
from api.deps import Services
from api.image_fetch import FetchSlots
from api.input_reference import (
    URL_PARAM,
    ImageRef,
    decode_data_url,
    read_reference,
    reference_source,
)
from api.schemas import VideoCreateRequest
from darkroom.settings import Settings
from storage import files
from storage.blobs import LocalBlobStore
from storage.models import FilePurpose
from tests.image_server import png_bytes

PNG = png_bytes((32, 16))
MAX_BYTES = 64 * 1024


def body(**fields) -> VideoCreateRequest:
    return VideoCreateRequest(prompt="a fox", **fields)


def upload(data: bytes = PNG, name: str = "ref.png") -> UploadFile:
    import io

    return UploadFile(io.BytesIO(data), filename=name)


def refused(call, *args, **kwargs) -> APIError:
    with pytest.raises(APIError) as error:
        call(*args, **kwargs)
    return error.value


def test_no_reference_a_file_part_or_an_image_url():
    assert reference_source(body(), {}) is None
    part = upload()
    assert reference_source(body(), {"input_reference": [part]}) == ImageRef("input_reference", file=part)
    named = body(input_reference={"image_url": " https://example.com/a.png "})
    assert reference_source(named, {}) == ImageRef("input_reference", image_url="https://example.com/a.png")
    by_id = body(input_reference={"file_id": "file-abc"})
    assert reference_source(by_id, {}) == ImageRef("input_reference", file_id="file-abc")


@pytest.mark.parametrize(
    "fields,files,status,param,code",
    [
        ({"input_reference": {"file_id": " "}}, 0, 400, "input_reference.file_id", "missing_required_parameter"),
        ({"input_reference": {"file_id": "file-1", "image_url": "https://example.com/a.png"}}, 0, 400,
         "input_reference", "invalid_value"),
        ({"input_reference": {}}, 0, 400, URL_PARAM, "missing_required_parameter"),
        ({"input_reference": {"image_url": "  "}}, 0, 400, URL_PARAM, "missing_required_parameter"),
        ({"input_reference": {"image_url": "https://example.com/a.png"}}, 1, 400, "input_reference", "invalid_value"),
        ({}, 2, 400, "input_reference", "invalid_value"),
    ],
)
def test_references_that_cannot_be_used_are_refused_naming_the_field(fields, files, status, param, code):
    error = refused(reference_source, body(**fields), {"input_reference": [upload() for _ in range(files)]})
    assert (error.status, error.param, error.code) == (status, param, code)


def test_an_unknown_field_in_the_object_is_a_validation_error():
    with pytest.raises(ValidationError) as error:
        body(input_reference={"image_url": "https://example.com/a.png", "url": "x"})
    assert error.value.errors()[0]["loc"] == ("input_reference", "url")


def test_a_data_url_decodes_to_its_bytes():
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert decode_data_url(url, max_bytes=MAX_BYTES) == PNG
    assert decode_data_url(url.replace("data:image/png", "DATA:image/png;name=a.png"), max_bytes=MAX_BYTES) == PNG


@pytest.mark.parametrize(
    "url,status,code",
    [
        ("data:text/plain;base64,aGVsbG8=", 400, "invalid_image_url"),
        ("data:image/png,rawbytes", 400, "invalid_image_url"),
        ("data:image/png;base64", 400, "invalid_image_url"),
        ("data:image/png;base64,not*base64!", 400, "invalid_image_url"),
        ("data:image/png;base64," + "A" * (MAX_BYTES * 2), 413, "file_too_large"),
    ],
)
def test_bad_data_urls_are_refused(url, status, code):
    error = refused(decode_data_url, url, max_bytes=MAX_BYTES)
    assert (error.status, error.param, error.code) == (status, URL_PARAM, code)


def test_a_data_url_of_millions_of_parameters_is_refused_for_its_header_alone():
    error = refused(decode_data_url, "data:image/png" + ";x" * 10_000_000, max_bytes=MAX_BYTES)
    assert (error.status, error.param, error.code) == (400, URL_PARAM, "invalid_image_url")
    assert "no ',' within its first 1024 characters" in error.message


@pytest.fixture
def services(sessions, tmp_path) -> Services:
    settings = Settings(max_upload_bytes=MAX_BYTES, max_upload_pixels=64 * 64)
    return Services(
        settings, sessions, LocalBlobStore(tmp_path / "blobs"), celery=None, started_at=0,
        image_fetches=FetchSlots(settings),
    )


def read(ref: ImageRef, services: Services, owner: str = "owner-a"):
    return asyncio.run(read_reference(ref, services, owner))


def test_read_reference_validates_a_data_url_image_like_an_upload(services):
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    image = read(ImageRef("input_reference", image_url=url), services)
    assert (image.data, image.content_type, image.width, image.height) == (PNG, "image/png", 32, 16)
    not_an_image = "data:image/png;base64," + base64.b64encode(b"GIF89a nope").decode()
    with pytest.raises(APIError) as error:
        read(ImageRef("input_reference", image_url=not_an_image), services)
    assert (error.value.param, error.value.code) == (URL_PARAM, "invalid_image")
    part = read(ImageRef("input_reference", file=upload()), services)
    assert (part.field, part.width) == ("input_reference", 32)


def test_the_param_names_where_the_reference_is():
    error = refused(decode_data_url, "data:image/png;base64,!!", max_bytes=MAX_BYTES, param="images[2].image_url")
    assert (error.param, error.code) == ("images[2].image_url", "invalid_image_url")
    assert "images[2].image_url" in error.message


def _stored_file(services: Services, data: bytes, *, purpose=FilePurpose.VISION, owner="owner-a") -> str:
    file_id = files.new_file_id()
    services.blobs.put(files.blob_key(file_id), data, "image/png")
    with services.sessions() as session:
        files.create(
            session, file_id=file_id, owner=owner, purpose=purpose, filename="a.png", size=len(data),
            content_type="image/png", expires_at=None,
        )
        session.commit()
    return file_id


def test_a_file_id_reads_the_owners_image_file(services):
    for purpose in (FilePurpose.VISION, FilePurpose.USER_DATA):
        image = read(ImageRef("mask", file_id=_stored_file(services, PNG, purpose=purpose)), services)
        assert (image.field, image.data, image.content_type, image.width) == ("mask.file_id", PNG, "image/png", 32)


@pytest.mark.parametrize(
    "case,status,code",
    [
        ("another key's", 404, "not_found"),
        ("unknown", 404, "not_found"),
        ("deleted", 404, "not_found"),
        ("batch", 400, "invalid_file_purpose"),
        ("not an image", 400, "invalid_image"),
        ("too many pixels", 400, "image_too_large"),
        ("too many bytes", 413, "file_too_large"),
    ],
)
def test_a_file_id_that_is_not_the_owners_image_is_refused_naming_the_field(services, case, status, code):
    data = {
        "not an image": b'{"custom_id": 1}',
        "too many pixels": png_bytes((65, 64)),
        "too many bytes": b"x" * (MAX_BYTES + 1),
    }
    file_id = _stored_file(
        services,
        data.get(case, PNG),
        purpose=FilePurpose.BATCH if case == "batch" else FilePurpose.USER_DATA,
        owner="owner-b" if case == "another key's" else "owner-a",
    )
    if case == "deleted":
        with services.sessions() as session:
            files.expire_now(session, file_id)
    with pytest.raises(APIError) as error:
        read(ImageRef("images[1]", file_id="file-unknown" if case == "unknown" else file_id), services)
    assert (error.value.status, error.value.param, error.value.code) == (status, "images[1].file_id", code)
