"""Remix: a new video job that reruns a completed one's recorded parameters with a new prompt.

The source's `params` are the request as the worker ran it, every default resolved (the seed
included), so a remix with the source's own prompt reproduces the source exactly.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from api.errors import bad_request
from pipelines.registry import REGISTRY, ModelSpec
from storage.models import Job, JobStatus


def remixable_model(source: Job, served: Collection[str]) -> ModelSpec:
    """The model to run the remix on, if `source` can be remixed here; else a 400 saying why."""
    if source.status != JobStatus.COMPLETED:
        raise bad_request(
            f"Video '{source.id}' is {source.status}; only a completed video can be remixed.",
            param="video_id",
            code="video_not_completed",
        )
    if source.input_keys:
        # An image-to-video source: its input image is deleted once it has run (unless the
        # deployment keeps inputs), so there is nothing reliable to remix it from.
        raise bad_request(
            f"Video '{source.id}' was made from an input_reference image, and remixing such videos "
            "is not supported. Create a new video with the image and the new prompt.",
            param="video_id",
            code="remix_not_supported",
        )
    if source.model not in served or source.model not in REGISTRY:
        raise bad_request(
            f"Video '{source.id}' was made by the model '{source.model}', which this deployment no "
            "longer serves, so it cannot be remixed.",
            param="video_id",
            code="model_not_found",
        )
    return REGISTRY[source.model]


def remix_params(source: Job, prompt: str) -> dict[str, Any]:
    """The source's parameters with the new prompt; nothing else changes, the seed included."""
    return {**source.params, "prompt": prompt}
