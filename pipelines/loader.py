"""Find a model's weights on disk and load its diffusers pipeline and runner.

Tiny models are built on first use into the models directory; real models are read from the
models directory (`<models_dir>/<org>/<name>`) or the Hugging Face cache, never downloaded here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import diffusers
import torch
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from PIL import Image

from pipelines import processor_compat
from pipelines.acceleration.attention import fall_back_to_native, set_attention_backend
from pipelines.acceleration.cache_hooks import Policy
from pipelines.acceleration.cfg_parallel import enable_cfg_parallel
from pipelines.acceleration.compile import compile_transformer
from pipelines.acceleration.distributed import enable_context_parallel, group_mesh
from pipelines.acceleration.memory import (
    MemoryOptions,
    check_device_memory,
    check_host_memory,
    component_weight_bytes,
    peak_device_gib,
    place_pipeline,
    reset_device_peak,
)
from pipelines.runners.base import Runner
from pipelines.runners.image import ImageEditRunner, TextToImageRunner
from pipelines.runners.lora import LoraAdapters
from pipelines.runners.video import ImageToVideoRunner, TextToVideoRunner
from pipelines.spec.checks import Deployment, check_cache
from pipelines.spec.lora_names import DEFAULT_MAX_ADAPTER_BYTES
from pipelines.spec.parallel_plan import ParallelPlan
from pipelines.spec.registry import Family, ModelSpec
from pipelines.spec.types import GenerationRequest
from pipelines.tiny.build import build_tiny_model

log = logging.getLogger("darkroom.pipelines")

_RUNNERS: dict[Family, type[Runner]] = {
    Family.TEXT_TO_IMAGE: TextToImageRunner,
    Family.IMAGE_EDIT: ImageEditRunner,
    Family.TEXT_TO_VIDEO: TextToVideoRunner,
    Family.IMAGE_TO_VIDEO: ImageToVideoRunner,
}


@dataclass(frozen=True)
class Acceleration:
    """A worker's acceleration choices (pipelines/acceleration/), from its settings: the same for
    every model it serves, except the cache, which the operator may set per model over the
    registry's default."""

    attention_backend: str = "auto"  # a diffusers backend name, or "auto" (the platform's best)
    compile: bool = False
    warm_up: bool = True  # one short generation per model at start, so no user's job is the first
    cache: dict[str, Policy] = field(default_factory=dict)  # model name -> policy


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
    spec: ModelSpec, models_dir: Path, device: str = "cpu", memory: MemoryOptions = MemoryOptions()
) -> diffusers.DiffusionPipeline:
    """Load `spec`'s pipeline onto `device` as `memory` says, refusing first, with the numbers,
    when the device has no room for it (pipelines/acceleration/memory.py)."""
    path = resolve_model_path(spec, models_dir)
    dtype = component_dtypes(spec)
    weights = component_weight_bytes(path, dtype)
    check_device_memory(spec.name, device, weights, memory)
    check_host_memory(spec.name, weights, memory)
    pipeline_class = getattr(diffusers, spec.pipeline_class)
    extra = {}
    if (
        spec.pipeline_class == "QwenImageEditPlusPipeline"
        and not processor_compat.torchvision_available()
    ):
        # Only without torchvision: see pipelines/processor_compat.py.
        extra["processor"] = processor_compat.load_processor(path)
    pipeline = pipeline_class.from_pretrained(path, dtype=dtype, **extra)
    place_pipeline(pipeline, device, memory)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def component_dtypes(spec: ModelSpec) -> torch.dtype | dict[str, torch.dtype]:
    """The dtype to load in: the spec's, or per component where some must stay float32."""
    dtype = getattr(torch, spec.dtype)
    if not spec.float32_components:
        return dtype
    return {"default": dtype, **{name: torch.float32 for name in spec.float32_components}}


def load_runner(
    spec: ModelSpec,
    models_dir: Path,
    device: str = "cpu",
    acceleration: Acceleration = Acceleration(),
    parallel: ParallelPlan | None = None,  # shard over this rank's (joined) group: acceleration/distributed.py
    memory: MemoryOptions = MemoryOptions(),
    lora_dir: Path | None = None,  # where requests' LoRA adapters are found; None: the model takes none
    lora_cache_size: int = 8,  # adapters kept loaded in the pipeline, least recently used evicted
    lora_max_bytes: int = DEFAULT_MAX_ADAPTER_BYTES,  # a larger adapter file is refused unread
) -> Runner:
    """Load `spec`'s pipeline, set its attention backend, compile it if asked, and warm it up."""
    runner_class = _RUNNERS[spec.family]
    cache = acceleration.cache.get(spec.name, spec.cache)
    # The default every job without a cache of its own runs with: refused before any weight loads.
    sharded = parallel is not None and parallel.context_parallel
    check_cache(spec, cache, Deployment(compiled=acceleration.compile, sharded=sharded))
    pipeline = load_pipeline(spec, models_dir, device, memory)
    loras = LoraAdapters(pipeline, lora_dir, lora_cache_size, lora_max_bytes) if lora_dir is not None else None
    runner = runner_class(spec, pipeline, cache=cache, loras=loras)
    backend = set_attention_backend(pipeline.transformer, acceleration.attention_backend, device)
    if parallel is not None and parallel.context_parallel:
        # After the backend (diffusers checks it supports context parallelism), before compile
        # and warm-up (each rank warms up its shard, in step with the others).
        enable_context_parallel(pipeline.transformer, parallel)
    if parallel is not None and parallel.cfg_degree > 1:
        enable_cfg_parallel(pipeline.transformer, group_mesh(parallel))
    if acceleration.compile:
        compile_transformer(pipeline.transformer)
    if acceleration.warm_up:
        reset_device_peak(device)
        try:
            seconds = _warm_up(runner)
        except Exception:
            if backend == "native":
                raise
            # A backend can be installed yet refuse this model's inputs (a mask, a head size).
            log.warning("%s failed its warm-up with attention backend %s", spec.name, backend, exc_info=True)
            backend = fall_back_to_native(pipeline.transformer)
            seconds = _warm_up(runner)
        peak = peak_device_gib(device)
        log.info(
            "%s warmed up in %.2f s%s", spec.name, seconds, f", device peak {peak:.1f} GiB" if peak is not None else ""
        )
    log.info(
        "%s on %s: attention backend %s, %s, default cache %s, offload %s",
        spec.name,
        device,
        backend,
        "compiled" if acceleration.compile else "not compiled",
        runner.cache.type,
        memory.offload.value,
    )
    return runner


def _warm_up(runner: Runner) -> float:
    """Two steps at the model's default size: the first call builds compiled graphs and kernel
    plans, which must not happen on a user's job. (One step divides by zero in schedulers with a
    terminal shift, such as Qwen-Image's.) A model that takes masks warms its inpainting
    pipeline up too, with the left half of the image masked."""
    spec = runner.spec
    width, height = spec.size.default
    gray = Image.new("RGB", (width, height), (128, 128, 128))
    request = GenerationRequest(
        prompt="warm-up",
        width=width,
        height=height,
        seed=0,
        num_inference_steps=2,
        negative_prompt=spec.negative_prompt,
        num_frames=spec.frames.frames_for(spec.frames.default_seconds) if spec.frames else None,
        images=(gray,) if spec.max_input_images else (),
    )
    started = time.perf_counter()
    runner.run(request)
    if spec.inpaint_pipeline_class is not None:
        mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
        mask.paste((0, 0, 0, 0), (0, 0, width // 2, height))
        runner.run(replace(request, mask=mask))
    return time.perf_counter() - started
