"""What Darkroom relies on in each diffusers pipeline class it serves, as data.

The API refuses a request the model's pipeline cannot serve (a LoRA, previews) and the worker's
parent refuses a sharded plan its transformer cannot run, both without importing diffusers, so the
facts live here, one entry per pipeline class. tests/unit/pipelines/spec/test_pipeline_traits.py
checks every entry against the installed diffusers and the preview decoders.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PipelineTraits:
    # A diffusers LoRA loader mixin (`load_lora_weights`, `set_adapters`): requests may name
    # adapters (pipelines/runners/lora.py).
    takes_lora: bool
    # pipelines/runners/previews.py decodes its latents: a streamed image may ask `partial_images`.
    previews: bool
    # Its transformer class, when that ships a `_cp_plan` in diffusers 0.42 (context parallelism,
    # pipelines/acceleration/distributed.py); None: it cannot be sharded over the sequence.
    context_parallel_transformer: str | None


PIPELINE_TRAITS: dict[str, PipelineTraits] = {
    "QwenImagePipeline": PipelineTraits(
        takes_lora=True, previews=True, context_parallel_transformer="QwenImageTransformer2DModel"
    ),
    "QwenImageEditPlusPipeline": PipelineTraits(
        takes_lora=True, previews=True, context_parallel_transformer="QwenImageTransformer2DModel"
    ),
    "WanPipeline": PipelineTraits(
        takes_lora=True, previews=False, context_parallel_transformer="WanTransformer3DModel"
    ),
    "WanImageToVideoPipeline": PipelineTraits(
        takes_lora=True, previews=False, context_parallel_transformer=None
    ),
    "FluxPipeline": PipelineTraits(
        takes_lora=True, previews=True, context_parallel_transformer="FluxTransformer2DModel"
    ),
}

# A class outside the table: nothing is assumed of it, so whatever needs a trait is refused.
NO_TRAITS = PipelineTraits(takes_lora=False, previews=False, context_parallel_transformer=None)


def pipeline_traits(pipeline_class: str) -> PipelineTraits:
    """The traits of the diffusers pipeline class named `pipeline_class`."""
    return PIPELINE_TRAITS.get(pipeline_class, NO_TRAITS)
