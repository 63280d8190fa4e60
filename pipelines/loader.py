"""Find a model's weights on disk and load its diffusers pipeline and runner.

Tiny models are built on first use into the models directory; real models are read from the
models directory (`<models_dir>/<org>/<name>`) or the Hugging Face cache, never downloaded here.
"""

from __future__ import annotations

from pathlib import Path

import diffusers
import torch
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from pipelines import processor_compat
from pipelines.registry import Family, ModelSpec
from pipelines.runners import ImageEditRunner, Runner, TextToImageRunner, TextToVideoRunner
from pipelines.tiny import build_tiny_model

_RUNNERS: dict[Family, type[Runner]] = {
    Family.TEXT_TO_IMAGE: TextToImageRunner,
    Family.IMAGE_EDIT: ImageEditRunner,
    Family.TEXT_TO_VIDEO: TextToVideoRunner,
}


class ModelNotAvailableError(Exception):
    """The model's weights are on neither the models directory nor the Hugging Face cache."""


def resolve_model_path(spec: ModelSpec, models_dir: Path) -> Path:
    """The directory holding `spec`'s pipeline (`model_index.json` and component folders)."""
    models_dir = Path(models_dir)
    if spec.is_tiny:
        path = models_dir / spec.name
        if not path.exists():
            build_tiny_model(spec.source, path)
        return path

    local = models_dir / spec.source
    if local.is_dir():
        return local
    try:
        return Path(snapshot_download(spec.source, local_files_only=True))
    except LocalEntryNotFoundError as exc:
        raise ModelNotAvailableError(
            f"model {spec.name!r} is not available: no directory {local} and no "
            f"{spec.source!r} snapshot in the Hugging Face cache ({constants.HF_HUB_CACHE}). "
            "Download it into one of them "
            f"(e.g. `hf download {spec.source} --local-dir {local}`)."
        ) from exc


def load_pipeline(
    spec: ModelSpec, models_dir: Path, device: str = "cpu"
) -> diffusers.DiffusionPipeline:
    path = resolve_model_path(spec, models_dir)
    pipeline_class = getattr(diffusers, spec.pipeline_class)
    extra = {}
    if (
        spec.pipeline_class == "QwenImageEditPlusPipeline"
        and not processor_compat.torchvision_available()
    ):
        # Only without torchvision: see pipelines/processor_compat.py.
        extra["processor"] = processor_compat.load_processor(path)
    pipeline = pipeline_class.from_pretrained(path, dtype=getattr(torch, spec.dtype), **extra)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def load_runner(spec: ModelSpec, models_dir: Path, device: str = "cpu") -> Runner:
    pipeline = load_pipeline(spec, models_dir, device)
    return _RUNNERS[spec.family](spec, pipeline)
