"""Remix: which sources may be remixed, what the new job runs, how its Idempotency-Key
fingerprint differs from other requests', and the column that records its source."""

from __future__ import annotations

import io

import pytest
from alembic import command
from PIL import Image
from pydantic import ValidationError
from sqlalchemy import inspect

from api.errors import APIError, validation_error
from api.remix import remixable_model, source_inputs
from api.schemas import Video, VideoCreateRequest, VideoRemixRequest
from api.submission.idempotency import fingerprint
from storage import jobs
from storage.blobs import LocalBlobStore
from storage.db import alembic_config, make_engine
from storage.models import Job, JobKind, JobStatus

PARAMS = {
    "prompt": "a red fox in snow",
    "width": 64,
    "height": 32,
    "seed": 1234,
    "num_inference_steps": 3,
    "negative_prompt": "blurry",
    "seconds": "2",
    "num_frames": 17,
    "fps": 8,
    "guidance_scale": 5.0,
}


def _source(status: JobStatus = JobStatus.COMPLETED, **fields) -> Job:
    values = {
        "id": "video_source",
        "kind": JobKind.VIDEO,
        "model": "tiny-wan",
        "params": dict(PARAMS),
        "input_keys": [],
    }
    return Job(status=status, **(values | fields))


def test_a_completed_source_on_a_served_model_remixes_on_that_model():
    assert remixable_model(_source(), served=["tiny-qwen-image", "tiny-wan"]).name == "tiny-wan"


@pytest.mark.parametrize(
    "status", [JobStatus.QUEUED, JobStatus.IN_PROGRESS, JobStatus.FAILED, JobStatus.CANCELLED]
)
def test_only_a_completed_source_can_be_remixed(status):
    with pytest.raises(APIError) as error:
        remixable_model(_source(status), served=["tiny-wan"])
    assert (error.value.status, error.value.code, error.value.param) == (400, "video_not_completed", "video_id")
    assert f"is {status};" in error.value.message


def test_an_image_to_video_remix_carries_the_source_input_image(tmp_path):
    blobs = LocalBlobStore(tmp_path)
    png = io.BytesIO()
    Image.new("RGB", (40, 24), "red").save(png, "PNG")
    blobs.put("inputs/video_source/0", png.getvalue(), "image/png")
    source = _source(model="tiny-wan-i2v", input_keys=["inputs/video_source/0"])

    assert remixable_model(source, served=["tiny-wan-i2v"]).name == "tiny-wan-i2v"
    [upload] = source_inputs(source, blobs)
    assert (upload.data, upload.content_type, upload.width, upload.height) == (png.getvalue(), "image/png", 40, 24)
    assert source_inputs(_source(), blobs) == []  # a text-to-video source has none


def test_an_image_to_video_source_whose_image_is_gone_is_refused_clearly(tmp_path):
    source = _source(model="tiny-wan-i2v", input_keys=["inputs/video_source/0"])
    with pytest.raises(APIError) as error:
        source_inputs(source, LocalBlobStore(tmp_path))
    assert (error.value.status, error.value.code, error.value.param) == (400, "remix_not_supported", "video_id")
    assert "input_reference image that is no longer stored" in error.value.message


@pytest.mark.parametrize("model", ["tiny-wan", "no-such-model"])
def test_a_source_whose_model_is_no_longer_served_is_refused(model):
    with pytest.raises(APIError) as error:
        remixable_model(_source(model=model), served=["tiny-qwen-image"])
    assert (error.value.status, error.value.code) == (400, "model_not_found")
    assert model in error.value.message


@pytest.mark.parametrize(
    "data,param,code",
    [
        ({}, "prompt", "missing_required_parameter"),
        ({"prompt": "  "}, "prompt", "invalid_value"),
        ({"prompt": 7}, "prompt", "invalid_value"),
        ({"prompt": "x", "seed": 1}, "seed", "unknown_parameter"),
        ({"prompt": "x", "model": "tiny-wan"}, "model", "unknown_parameter"),
    ],
)
def test_remix_request_errors_name_the_field(data, param, code):
    with pytest.raises(ValidationError) as error:
        VideoRemixRequest.model_validate(data)
    located = [{**item, "loc": ("body", *item["loc"])} for item in error.value.errors()]
    api_error = validation_error(located)
    assert (api_error.status, api_error.param, api_error.code) == (400, param, code)


def test_one_idempotency_key_tells_remixes_of_different_sources_apart():
    remix = VideoRemixRequest(prompt="x")
    of_a = fingerprint(JobKind.VIDEO, remix, (), "video_a")
    assert of_a == fingerprint(JobKind.VIDEO, VideoRemixRequest(prompt="x"), (), "video_a")
    assert of_a != fingerprint(JobKind.VIDEO, remix, (), "video_b")
    # A create with the same body is another request too.
    assert of_a != fingerprint(JobKind.VIDEO, VideoCreateRequest(prompt="x"), ())


def test_the_source_is_stored_and_shown_and_absent_on_other_videos(sessions):
    with sessions() as session:
        for job_id, remixed_from in (("video_plain", None), ("video_remix", "video_plain")):
            jobs.create(
                session,
                job_id=job_id,
                kind=JobKind.VIDEO,
                model="tiny-wan",
                owner="o",
                params=PARAMS,
                remixed_from_video_id=remixed_from,
            )
        session.commit()
    with sessions() as session:
        assert Video.from_job(session.get(Job, "video_remix")).remixed_from_video_id == "video_plain"
        assert Video.from_job(session.get(Job, "video_plain")).remixed_from_video_id is None


def test_the_remix_migration_downgrades_and_upgrades(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    engine = make_engine(url)

    def columns() -> set[str]:
        return {column["name"] for column in inspect(engine).get_columns("jobs")}

    assert "remixed_from_video_id" in columns()
    command.downgrade(config, "0003_operations")
    assert "remixed_from_video_id" not in columns()
    command.upgrade(config, "head")
    assert "remixed_from_video_id" in columns()
    engine.dispose()
