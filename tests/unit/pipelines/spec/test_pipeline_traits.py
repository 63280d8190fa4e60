"""The pipeline traits table (torch-free, read by the API and the worker's parent) against what
the installed diffusers and the preview decoders really do."""

from __future__ import annotations

import diffusers

from pipelines.runners.previews import DECODERS
from pipelines.spec.pipeline_traits import NO_TRAITS, PIPELINE_TRAITS, pipeline_traits
from pipelines.spec.registry import REGISTRY, Family


def test_every_served_pipeline_class_is_in_the_table():
    assert {spec.pipeline_class for spec in REGISTRY.values()} <= set(PIPELINE_TRAITS)
    assert pipeline_traits("SanaPipeline") == NO_TRAITS


def test_the_lora_table_matches_the_installed_diffusers():
    for name, traits in PIPELINE_TRAITS.items():
        assert hasattr(getattr(diffusers, name), "load_lora_weights") == traits.takes_lora, name
    for spec in REGISTRY.values():
        has_loader = hasattr(getattr(diffusers, spec.pipeline_class), "load_lora_weights")
        assert has_loader == spec.traits.takes_lora, spec.pipeline_class


def test_the_context_parallel_table_matches_the_installed_diffusers():
    for pipeline_class, traits in PIPELINE_TRAITS.items():
        assert getattr(diffusers, pipeline_class)  # still a pipeline diffusers ships
        transformer_class = traits.context_parallel_transformer
        if transformer_class is not None:
            assert getattr(diffusers, transformer_class)._cp_plan is not None, transformer_class


def test_every_image_model_can_make_previews():
    """The API refuses partial_images for a pipeline without previews; the table (torch-free, read
    by the API) and the decoders must name the same pipelines."""
    previews = {name for name, traits in PIPELINE_TRAITS.items() if traits.previews}
    assert previews == set(DECODERS)
    image_families = (Family.TEXT_TO_IMAGE, Family.IMAGE_EDIT)
    assert {spec.pipeline_class for spec in REGISTRY.values() if spec.family in image_families} <= previews
