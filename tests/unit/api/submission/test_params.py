"""What a job records: the request's values or the model's defaults, each refused with the field
named when the model or the deployment cannot run it."""

from __future__ import annotations

import pytest

from api.errors import APIError
from api.schemas import ImageEditRequest, ImageGenerateRequest, VideoCreateRequest
from api.submission.params import image_params, remix_params, video_length, video_params
from darkroom.settings import Settings
from pipelines.spec.params import JobParams
from pipelines.spec.registry import ModelSpec, get_model
from pipelines.spec.types import LoraWeight
from storage.models import Job, JobKind, JobStatus

SETTINGS = Settings()
EDIT = get_model("tiny-qwen-image-edit")


def params_for(spec: ModelSpec, settings: Settings = SETTINGS, **fields) -> JobParams:
    """The parameters the endpoint for `spec`'s family would record for a request of `fields`."""
    if spec.frames is not None:
        body = VideoCreateRequest(prompt="a fox", **fields)
        return video_params(settings, spec, body, (64, 64), video_length(spec, body.seconds))
    return image_params(settings, spec, ImageGenerateRequest(prompt="a fox", **fields), (64, 64))


def test_defaults_fill_in_what_the_request_leaves_out():
    params = params_for(get_model("tiny-qwen-image"))
    assert (params.num_inference_steps, params.true_cfg_scale, params.negative_prompt) == (4, 4.0, " ")
    assert params.guidance_scale is None


def test_a_scale_the_model_has_is_taken_from_the_request():
    assert params_for(get_model("tiny-flux"), guidance_scale=7.0).guidance_scale == 7.0


def test_a_video_records_its_seconds_frames_and_rate():
    params = params_for(get_model("tiny-wan"), seconds="2")
    assert (params.seconds, params.num_frames, params.fps) == ("2", 17, 8)


@pytest.mark.parametrize(
    "model,fields,param,code",
    [
        ("tiny-flux", {"true_cfg_scale": 4.0}, "true_cfg_scale", "unsupported_parameter"),
        ("tiny-wan", {"true_cfg_scale": 4.0}, "true_cfg_scale", "unsupported_parameter"),
        ("tiny-qwen-image", {"guidance_scale": 4.0}, "guidance_scale", "unsupported_parameter"),
        ("tiny-flux", {"negative_prompt": "blurry"}, "negative_prompt", "unsupported_parameter"),
        ("Wan-AI/Wan2.1-T2V-14B-Diffusers", {"num_inference_steps": 101}, "num_inference_steps", "invalid_value"),
    ],
)
def test_what_a_model_cannot_take_is_refused_naming_the_param(model, fields, param, code):
    with pytest.raises(APIError) as error:
        params_for(get_model(model), **fields)
    assert (error.value.status, error.value.param, error.value.code) == (400, param, code)
    assert model in error.value.message


def test_the_job_records_the_adapters_and_none_without():
    adapters = [{"path_or_id": "a"}, {"path_or_id": "b"}]
    assert params_for(get_model("tiny-wan"), lora=adapters).lora == (LoraWeight("a", 1.0), LoraWeight("b", 1.0))
    assert params_for(get_model("tiny-wan")).lora == ()
    assert params_for(get_model("tiny-wan"), lora=[]).lora == ()


@pytest.mark.parametrize(
    "settings,lora,param",
    [
        ({"lora_max_per_request": 2}, ("a", "b", "c"), "lora"),
        ({}, ("a", "b", "a"), "lora[2].path_or_id"),
        ({"compile_transformer": True}, ("a",), "lora"),
    ],
)
def test_lora_limits_per_deployment(settings, lora, param):
    with pytest.raises(APIError) as error:
        params_for(get_model("tiny-qwen-image"), Settings(**settings), lora=[{"path_or_id": name} for name in lora])
    assert (error.value.status, error.value.param) == (400, param)


def test_the_job_records_the_mask_input_and_the_strength():
    def edit(strength, mask_input):
        body = ImageEditRequest(prompt="a fox", strength=strength)
        return image_params(SETTINGS, EDIT, body, (64, 64), mask_input=mask_input)

    assert (edit(None, 1).mask_input, edit(None, 1).strength) == (1, 1.0)
    assert (edit(0.4, 2).mask_input, edit(0.4, 2).strength) == (2, 0.4)
    assert (edit(None, None).mask_input, edit(None, None).strength) == (None, None)
    with pytest.raises(APIError) as error:
        edit(0.5, None)
    assert (error.value.param, error.value.code) == ("strength", "unsupported_parameter")


def test_previews_are_recorded_only_for_a_stream():
    spec = get_model("tiny-qwen-image")
    assert params_for(spec, stream=True, partial_images=2).partial_images == 2
    assert params_for(spec, stream=False).partial_images == 0


def test_a_remix_runs_the_source_parameters_with_the_new_prompt():
    stored = params_for(get_model("tiny-wan"), seed=1234, seconds="2").to_stored()
    source = Job(id="video_source", kind=JobKind.VIDEO, model="tiny-wan", status=JobStatus.COMPLETED, params=stored)
    params = remix_params(source, "a blue fox")
    assert params == JobParams.from_stored(stored | {"prompt": "a blue fox"})
    assert source.params == stored  # the source's record is untouched
