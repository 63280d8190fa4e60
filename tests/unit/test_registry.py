"""Size and seconds parsing against a model's rules."""

from __future__ import annotations

import pytest

from pipelines.registry import REGISTRY, TINY_MODELS, Family, FrameRule, SizeRule, get_model

RULE = SizeRule(default=(64, 64), multiple=16, min_side=16, max_side=256)


@pytest.mark.parametrize("size,expected", [("64x32", (64, 32)), ("16x256", (16, 256)), (" 32x48 ", (32, 48))])
def test_sizes_within_the_rules_parse_to_width_and_height(size, expected):
    assert RULE.parse(size) == expected


@pytest.mark.parametrize(
    "size", ["64", "64x", "x64", "64*64", "64x64x3", "-16x16", "64X64", "0x0", "8x8", "272x16", "64x70", ""]
)
def test_other_sizes_are_refused_with_the_rule_in_the_message(size):
    with pytest.raises(ValueError, match="multiple of 16 between 16 and 256"):
        RULE.parse(size)


@pytest.mark.parametrize(
    "width,height,expected",
    [(64, 64, (64, 64)), (96, 48, (96, 48)), (1000, 500, (96, 48)), (10, 10, (16, 16)), (4000, 100, (256, 16))],
)
def test_fit_keeps_the_aspect_ratio_within_the_default_area(width, height, expected):
    assert RULE.fit(width, height) == expected


def test_seconds_map_to_frames_with_wans_4k_plus_1_rule():
    rule = FrameRule(fps=16, allowed_seconds=("1", "2", "5"), default_seconds="5")
    assert [rule.frames_for(s) for s in ("1", "2", "5")] == [17, 33, 81]
    odd_rate = FrameRule(fps=6, allowed_seconds=("1", "3"), default_seconds="1")
    assert [odd_rate.frames_for(s) for s in ("1", "3")] == [9, 21]  # 6 -> 8+1, 18 -> 20+1


@pytest.mark.parametrize("seconds", ["0", "6", "4.5", "", "four"])
def test_seconds_outside_the_list_are_refused_with_the_list(seconds):
    rule = FrameRule(fps=16, allowed_seconds=("1", "2", "5"), default_seconds="5")
    with pytest.raises(ValueError, match="allowed: 1, 2, 5"):
        rule.frames_for(seconds)


def test_every_entry_is_consistent():
    for name, spec in REGISTRY.items():
        assert spec.name == name
        assert spec.size.parse("{}x{}".format(*spec.size.default)) == spec.size.default
        assert (spec.frames is not None) == (spec.family == Family.TEXT_TO_VIDEO)
        assert (spec.max_input_images > 0) == (spec.family == Family.IMAGE_EDIT)
        if spec.frames:
            assert spec.frames.default_seconds in spec.frames.allowed_seconds
    assert set(TINY_MODELS) == {"tiny-qwen-image", "tiny-qwen-image-edit", "tiny-wan"}
    assert get_model("Qwen/Qwen-Image-Edit-2511").pipeline_class == "QwenImageEditPlusPipeline"
    with pytest.raises(KeyError):
        get_model("sora-2")


def test_the_registry_and_the_api_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, api.app, pipelines.registry; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).split() == ["False", "False"]
