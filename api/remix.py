"""Remix: a new video job that reruns a completed one's recorded parameters with a new prompt
(api/submission/params.py `remix_params`).

The source's `params` are the request as the worker ran it, every default resolved (the seed
included), and an image-to-video source's input image goes with them, so a remix with the
source's own prompt reproduces the source exactly.
"""

from __future__ import annotations

import io
from collections.abc import Collection

from PIL import Image

from api.bodies import Upload
from api.errors import bad_request
from pipelines.spec.registry import REGISTRY, ModelSpec
from storage.blobs import BlobNotFound, BlobStore
from storage.models import Job, JobStatus


def remixable_model(source: Job, served: Collection[str]) -> ModelSpec:
    """The model to run the remix on, if `source` can be remixed here; else a 400 saying why."""
    if source.status != JobStatus.COMPLETED:
        raise bad_request(
            f"Video '{source.id}' is {source.status}; only a completed video can be remixed.",
            param="video_id",
            code="video_not_completed",
        )
    if source.model not in served or source.model not in REGISTRY:
        raise bad_request(
            f"Video '{source.id}' was made by the model '{source.model}', which this deployment no "
            "longer serves, so it cannot be remixed.",
            param="video_id",
            code="model_not_found",
        )
    return REGISTRY[source.model]


def source_inputs(source: Job, blobs: BlobStore) -> list[Upload]:
    """The source's input images (an image-to-video source's first frame), to be stored again
    under the remix's own job: each job owns its inputs, so deleting the source later leaves the
    remix whole. A completed video keeps its inputs as long as its outputs (worker/execute.py)."""
    uploads = []
    for key in source.input_keys:
        try:
            data, content_type = blobs.get(key), blobs.head(key).content_type
        except BlobNotFound:
            raise bad_request(
                f"Video '{source.id}' was made from an input_reference image that is no longer "
                "stored, so it cannot be remixed. Create a new video with the image and the new prompt.",
                param="video_id",
                code="remix_not_supported",
            ) from None
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
        uploads.append(Upload("input_reference", data, content_type, width, height))
    return uploads
