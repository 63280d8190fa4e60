"""Request schemas: unknown fields refused, prompts required, SDK encodings accepted."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.bodies import _bracket_to_dotted, _nest
from api.errors import validation_error
from api.schemas import ImageEditRequest, ImageGenerateRequest, VideoCreateRequest


def test_video_request_accepts_what_the_sdk_sends_as_form_text():
    body = VideoCreateRequest.model_validate(
        {"prompt": "a cat", "model": "tiny-wan", "seconds": "4", "size": "64x64", "seed": "42"}
    )
    assert (body.seconds, body.seed, body.num_inference_steps) == ("4", 42, None)


def test_video_seconds_may_be_a_json_number():
    assert VideoCreateRequest.model_validate({"prompt": "x", "seconds": 8}).seconds == "8"


@pytest.mark.parametrize(
    "data,param,code",
    [
        ({}, "prompt", "missing_required_parameter"),
        ({"prompt": " \n"}, "prompt", "invalid_value"),
        ({"prompt": "x", "fps": 24}, "fps", "unknown_parameter"),
        ({"prompt": "x", "num_inference_steps": 0}, "num_inference_steps", "invalid_value"),
        ({"prompt": "x", "seed": "abc"}, "seed", "invalid_value"),
    ],
)
def test_video_request_errors_name_the_field(data, param, code):
    with pytest.raises(ValidationError) as error:
        VideoCreateRequest.model_validate(data)
    located = [{**item, "loc": ("body", *item["loc"])} for item in error.value.errors()]
    api_error = validation_error(located)
    assert (api_error.status, api_error.param, api_error.code) == (400, param, code)


def test_image_requests_parse_sdk_multipart_text():
    body = ImageEditRequest.model_validate({"prompt": "x", "n": "2", "stream": "false", "output_compression": "80"})
    assert (body.n, body.stream, body.output_compression, body.response_format) == (2, False, 80, "b64_json")


@pytest.mark.parametrize("data", [{"prompt": "x", "n": 11}, {"prompt": "x", "style": "pop"}, {"prompt": "x", "mask": "m"}])
def test_image_generation_limits(data):
    with pytest.raises(ValidationError):
        ImageGenerateRequest.model_validate(data)


def test_bracketed_form_names_nest_like_the_sdk_encodes_them():
    assert _bracket_to_dotted("input_reference[image_url]") == "input_reference.image_url"
    assert _bracket_to_dotted("svg[reasoning][effort]") == "svg.reasoning.effort"
    assert _nest({"a.b": "1", "a.c.d": "2", "e": "3"}) == {"a": {"b": "1", "c": {"d": "2"}}, "e": "3"}
