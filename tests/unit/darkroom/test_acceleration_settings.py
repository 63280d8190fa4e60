"""The operator's cache and memory settings are checked when the settings load, not at the first job."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from darkroom.settings import Settings
from pipelines.spec.cache_policy import FirstBlockCache, parse_cache_policy


def test_model_cache_parses_per_model_policies():
    settings = Settings(model_cache={"tiny-qwen-image": {"type": "first_block_cache", "threshold": 0.2}})
    assert settings.model_cache["tiny-qwen-image"] == FirstBlockCache(threshold=0.2)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"model_cache": {"dall-e-3": {"type": "none"}}}, "unknown model"),
        ({"model_cache": {"tiny-qwen-image": {"type": "magcache"}}}, "no calibrated MagCache ratios"),
        ({"model_cache": {"tiny-qwen-image": {"type": "taylorseer", "interval": 0}}}, "interval"),
        (
            {"compile_transformer": True, "model_cache": {"tiny-flux": {"type": "magcache"}}},
            "do not combine",
        ),
    ],
)
def test_bad_cache_settings_refuse_to_load(fields, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)


def test_policies_fill_their_defaults():
    assert parse_cache_policy({"type": "taylorseer"}).model_dump() == {
        "type": "taylorseer", "interval": 5, "warmup_steps": 3, "order": 1,
    }  # fmt: skip


def test_memory_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("DARKROOM_OFFLOAD", "group")
    monkeypatch.setenv("DARKROOM_VAE_TILING", "true")
    monkeypatch.setenv("DARKROOM_VRAM_HEADROOM_GIB", "12.5")
    settings = Settings()
    assert (settings.offload, settings.vae_tiling, settings.vae_slicing, settings.vram_headroom_gib) == (
        "group", True, False, 12.5,
    )  # fmt: skip


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"offload": "sequential"}, "offload"),
        ({"vram_headroom_gib": -1}, "vram_headroom_gib"),
        ({"offload": "model", "devices": "cpu,cpu", "ulysses_degree": 2}, "does not combine with a sharded group"),
    ],
)
def test_bad_memory_settings_refuse_to_load(fields, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**fields)
