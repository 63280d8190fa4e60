"""LoRA in requests: the naming rule, SDK encodings (JSON and multipart), the field named in a
400, per-deployment limits, and the settings that must agree."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.bodies import _add_to_object_list, _lists_from_indices, _nest
from api.errors import APIError, validation_error
from api.schemas import ImageGenerateRequest
from darkroom.settings import Settings
from pipelines.spec.lora_names import check_lora_name


@pytest.mark.parametrize("name", ["ink", "styles/ink-v2", "someone/ink.style/ink_1.safetensors", "A1"])
def test_names_relative_to_the_lora_directory_pass(name):
    assert check_lora_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "/etc/passwd", "../x", "a/../b", "a/./b", ".hidden", "a//b", "a/", "a\\b", "~/x", "a b", "x" * 257]
)
def test_paths_that_could_leave_the_lora_directory_are_refused(name):
    with pytest.raises(ValueError):
        check_lora_name(name)


def test_multipart_object_lists_group_as_the_sdk_sends_them():
    items: list = []
    for key, value in [("path_or_id", "a"), ("scale", "0.8"), ("path_or_id", "b"), ("path_or_id", "c"), ("scale", "2")]:
        _add_to_object_list(items, key, value)
    assert items == [{"path_or_id": "a", "scale": "0.8"}, {"path_or_id": "b"}, {"path_or_id": "c", "scale": "2"}]


def test_indexed_form_names_become_lists():
    nested = _nest({"lora.1.path_or_id": "b", "lora.0.path_or_id": "a", "lora.0.scale": "1"})
    assert _lists_from_indices(nested) == {"lora": [{"path_or_id": "a", "scale": "1"}, {"path_or_id": "b"}]}
    assert _lists_from_indices({"x": {"1": "gap"}}) == {"x": {"1": "gap"}}  # not 0..n-1: left for the schema


def _first_error(data) -> APIError:
    with pytest.raises(ValidationError) as error:
        ImageGenerateRequest.model_validate(data)
    return validation_error([{**item, "loc": ("body", *item["loc"])} for item in error.value.errors()])


def test_a_bad_item_is_named_with_its_index():
    error = _first_error({"prompt": "x", "lora": [{"path_or_id": "ok"}, {"path_or_id": "ok2", "scale": "9"}]})
    assert (error.param, error.code) == ("lora[1].scale", "invalid_value")
    error = _first_error({"prompt": "x", "lora": [{"path_or_id": "../up"}]})
    assert error.param == "lora[0].path_or_id" and "LoRA name" in error.message


def test_the_adapter_cache_must_hold_a_whole_request():
    with pytest.raises(ValidationError, match="lora_cache_size"):
        Settings(lora_max_per_request=4, lora_cache_size=2)
    assert Settings(data_dir="/srv/darkroom").resolved_lora_dir.as_posix() == "/srv/darkroom/loras"
