"""Size and seconds parsing against a model's rules."""

from __future__ import annotations

import pytest

from pipelines.spec.registry import REGISTRY, TINY_MODELS, Family, FrameRule, SizeRule, get_model

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
    "size,expected",
    [("64x48", (64, 48)), ("70x50", (64, 48)), ("72x40", (80, 48)), ("8x8", (16, 16)), ("250x23", (256, 16))],
)
def test_rounded_sizes_go_to_the_nearest_multiple_halves_up(size, expected):
    assert RULE.parse(size, rounded=True) == expected


@pytest.mark.parametrize("size", ["7x64", "64x264", "300x16", "64by64", "0x0"])
def test_rounded_sizes_outside_the_range_are_refused_with_the_rounding_rule(size):
    with pytest.raises(ValueError, match="rounded to the nearest multiple of 16 .halves up., then between 16 and 256"):
        RULE.parse(size, rounded=True)


def test_every_masked_edit_model_is_an_edit_model_with_a_strength_in_range():
    takers = [spec for spec in REGISTRY.values() if spec.inpaint_pipeline_class]
    assert {spec.name for spec in takers} == {"Qwen/Qwen-Image-Edit-2511", "tiny-qwen-image-edit"}
    assert all(spec.family == Family.IMAGE_EDIT and 0 < spec.strength <= 1 for spec in takers)


@pytest.mark.parametrize(
    "width,height,expected",
    [(64, 64, (64, 64)), (96, 48, (96, 48)), (1000, 500, (96, 48)), (10, 10, (16, 16)), (4000, 100, (256, 16))],
)
def test_fit_keeps_the_aspect_ratio_within_the_default_area(width, height, expected):
    assert RULE.fit(width, height) == expected


@pytest.mark.parametrize(
    "width,height,expected",
    [(64, 64, (64, 64)), (32, 16, (96, 48)), (1000, 500, (96, 48)), (10, 10, (64, 64)), (100, 4000, (16, 256))],
)
def test_fit_with_upscale_brings_any_image_to_about_the_default_area(width, height, expected):
    assert RULE.fit(width, height, upscale=True) == expected


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
        assert (spec.frames is not None) == (spec.family in (Family.TEXT_TO_VIDEO, Family.IMAGE_TO_VIDEO))
        assert (spec.max_input_images > 0) == (spec.family in (Family.IMAGE_EDIT, Family.IMAGE_TO_VIDEO))
        if spec.family == Family.IMAGE_TO_VIDEO:
            assert spec.max_input_images == 1 and spec.pipeline_class == "WanImageToVideoPipeline"
        if spec.frames:
            assert spec.frames.default_seconds in spec.frames.allowed_seconds
        assert 1 <= spec.steps <= spec.max_steps
        # A negative prompt needs classifier-free guidance; every model with one runs CFG.
        if spec.true_cfg_scale is not None:
            assert spec.negative_prompt is not None
    assert set(TINY_MODELS) == {"tiny-qwen-image", "tiny-qwen-image-edit", "tiny-wan", "tiny-wan-i2v", "tiny-flux"}
    assert get_model("Qwen/Qwen-Image-Edit-2511").pipeline_class == "QwenImageEditPlusPipeline"
    with pytest.raises(KeyError):
        get_model("sora-2")


@pytest.mark.parametrize(
    "name,default_size,frames_at_default,fps",
    [
        ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", (832, 480), 81, 16),
        ("Wan-AI/Wan2.1-T2V-14B-Diffusers", (1280, 720), 81, 16),
        ("Wan-AI/Wan2.2-TI2V-5B-Diffusers", (1280, 704), 121, 24),
    ],
)
def test_wan_entries_match_their_model_cards(name, default_size, frames_at_default, fps):
    spec = get_model(name)
    assert spec.pipeline_class == "WanPipeline"
    assert spec.size.default == default_size
    assert spec.frames.fps == fps
    assert spec.frames.frames_for(spec.frames.default_seconds) == frames_at_default
    assert (spec.steps, spec.guidance_scale, spec.true_cfg_scale) == (50, 5.0, None)


def test_wan_2_2_sizes_are_multiples_of_32():
    rule = get_model("Wan-AI/Wan2.2-TI2V-5B-Diffusers").size
    assert rule.parse("704x1280") == (704, 1280)
    with pytest.raises(ValueError, match="multiple of 32"):
        rule.parse("1280x720")


def test_flux_dev_is_guidance_distilled():
    spec = get_model("black-forest-labs/FLUX.1-dev")
    assert (spec.pipeline_class, spec.family) == ("FluxPipeline", Family.TEXT_TO_IMAGE)
    assert (spec.steps, spec.guidance_scale) == (28, 3.5)
    assert spec.true_cfg_scale is None and spec.negative_prompt is None
    assert spec.size.parse("1024x768") == (1024, 768)


@pytest.mark.parametrize(
    "name,default_size,max_side",
    [("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", (832, 480), 832), ("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", (1280, 720), 1280)],
)
def test_wan_image_to_video_entries_match_their_model_cards(name, default_size, max_side):
    spec = get_model(name)
    assert (spec.family, spec.pipeline_class, spec.source) == (Family.IMAGE_TO_VIDEO, "WanImageToVideoPipeline", name)
    assert (spec.size.default, spec.size.max_side, spec.size.multiple) == (default_size, max_side, 16)
    assert spec.frames.fps == 16 and spec.frames.frames_for(spec.frames.default_seconds) == 81
    assert (spec.steps, spec.guidance_scale, spec.true_cfg_scale) == (50, 5.0, None)
    # The card loads the VAE and the CLIP image encoder in float32, the transformers in bfloat16.
    assert (spec.dtype, spec.float32_components) == ("bfloat16", ("vae", "image_encoder"))
    # A 4:3 photo runs at the checkpoint's trained area, in its own aspect ratio.
    width, height = spec.size.fit(4000, 3000, upscale=True)
    assert abs(width / height - 4 / 3) < 0.05 and 0.9 < width * height / (default_size[0] * default_size[1]) < 1.1
