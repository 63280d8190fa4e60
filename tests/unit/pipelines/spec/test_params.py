"""A job's stored parameters: written and read back whole, and rows written before they had a
type still load as what they were."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.spec.cache_policy import NoCache, TaylorSeer
from pipelines.spec.params import JobParams
from pipelines.spec.types import LoraWeight

# Rows as the API wrote them before JobParams, one per kind of job (api/submission.py at 11106d3).
OLD_IMAGE = {
    "prompt": "a fox", "width": 64, "height": 48, "seed": 7, "num_inference_steps": 4, "negative_prompt": " ",
    "guidance_scale": None, "true_cfg_scale": 4.0, "cache": None, "lora": None,
    "num_images": 2, "output_format": "webp", "output_compression": 80,
}  # fmt: skip
OLD_MASKED_EDIT = OLD_IMAGE | {
    "num_images": 1, "output_format": "png", "output_compression": None, "mask_input": 1, "strength": 0.6,
    "cache": {"type": "taylorseer", "interval": 4, "warmup_steps": 3, "order": 1},
    "lora": [{"path_or_id": "styles/ink", "scale": 0.8}],
}  # fmt: skip
OLD_STREAMED_IMAGE = OLD_IMAGE | {"num_images": 1, "partial_images": 2}
OLD_VIDEO = {
    "prompt": "waves", "width": 32, "height": 32, "seed": 1, "num_inference_steps": 4, "negative_prompt": "low quality",
    "guidance_scale": 5.0, "true_cfg_scale": None, "cache": {"type": "none"}, "lora": None,
    "seconds": "2", "num_frames": 17, "fps": 8,
}  # fmt: skip
# Before cache policies and LoRA (migration 0003 and earlier) a row had neither key.
OLDEST_VIDEO = {key: value for key, value in OLD_VIDEO.items() if key not in ("cache", "lora")}


@pytest.mark.parametrize("row", [OLD_IMAGE, OLD_MASKED_EDIT, OLD_STREAMED_IMAGE, OLD_VIDEO, OLDEST_VIDEO])
def test_rows_written_before_job_params_load_as_what_they_were(row):
    params = JobParams.from_stored(row)
    for key, value in row.items():
        if key == "cache":
            assert (params.cache.model_dump() if params.cache else None) == value
        elif key == "lora":
            assert [vars(adapter) for adapter in params.lora] == (value or [])
        else:
            assert getattr(params, key) == value, key
    assert params.version == 1


def test_old_rows_read_their_typed_values():
    edit = JobParams.from_stored(OLD_MASKED_EDIT)
    assert edit.cache == TaylorSeer(interval=4)
    assert edit.lora == (LoraWeight("styles/ink", 0.8),)
    assert JobParams.from_stored(OLD_VIDEO).cache == NoCache()
    assert JobParams.from_stored(OLD_IMAGE).partial_images == 0  # no key: no previews
    assert JobParams.from_stored(OLD_VIDEO).num_images == 1


@pytest.mark.parametrize("row", [OLD_IMAGE, OLD_MASKED_EDIT, OLD_STREAMED_IMAGE, OLD_VIDEO, OLDEST_VIDEO])
def test_stored_and_read_back_is_the_same(row):
    params = JobParams.from_stored(row)
    assert JobParams.from_stored(params.to_stored()) == params


@pytest.mark.parametrize(
    "change",
    [
        {"version": 2},  # written by a newer release: not run as something else
        {"width": "wide"},
        {"steps": 4},  # a key no release wrote
        {"prompt": None},
    ],
)
def test_unreadable_rows_are_refused(change):
    with pytest.raises(ValidationError):
        JobParams.from_stored(OLD_IMAGE | change)


def test_derived_values():
    params = JobParams.from_stored(OLD_IMAGE)
    assert (params.size, params.image_quality) == ("64x48", 80)
    assert JobParams.from_stored(OLD_IMAGE | {"output_compression": None}).image_quality == 90
