"""Where a pipeline's weights live, and whether the device has room for them.

Offload is diffusers' own (`enable_model_cpu_offload`, `enable_group_offload`); VAE tiling and
slicing are the VAE's. What Darkroom adds is the check before loading: how much of the device the
weights will take, read from the checkpoint's safetensors headers (no tensor is loaded), against
what the device has free, refusing to start with the numbers when they do not fit. A worker that
loads anyway dies with an out-of-memory error on its first large job, not at start, which is the
lesson of the Qwen-Image-Edit deployment guide.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("darkroom.pipelines")

GIB = 1024**3
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


class Offload(StrEnum):
    NONE = "none"  # every component resident on the device
    MODEL = "model"  # one whole component on the device at a time (accelerate hooks)
    GROUP = "group"  # layers streamed from pinned CPU memory, prefetched on a CUDA stream


@dataclass(frozen=True)
class MemoryOptions:
    """A worker's memory choices, from its settings; the same for every model it serves."""

    offload: Offload = Offload.NONE
    vae_tiling: bool = False  # decode in overlapping tiles: large frames and videos in bounded memory
    vae_slicing: bool = False  # decode a batch (`n` images) one at a time
    headroom_gib: float = 8.0  # free device memory required beyond the weights: activations, VAE decode


class InsufficientMemoryError(RuntimeError):
    """The device cannot hold the model with the required headroom; the message has the numbers."""


def component_weight_bytes(model_path: Path, dtype: torch.dtype | dict[str, torch.dtype]) -> dict[str, int]:
    """Bytes each pipeline component's weights take once loaded in `dtype` (one, or per component
    with a "default" as `from_pretrained` takes it), from the headers of its safetensors files:
    floating tensors are cast to the dtype on load, others keep theirs."""
    sizes: dict[str, int] = {}
    for component in sorted(path for path in Path(model_path).iterdir() if path.is_dir()):
        loaded_as = dtype.get(component.name, dtype["default"]) if isinstance(dtype, dict) else dtype
        itemsize = torch.empty((), dtype=loaded_as).element_size()
        total = 0
        for file in component.glob("*.safetensors"):
            for tensor in _safetensors_header(file).values():
                if tensor["dtype"] in _FLOAT_DTYPES:
                    total += math.prod(tensor["shape"]) * itemsize
                else:
                    start, end = tensor["data_offsets"]
                    total += end - start
        if total:
            sizes[component.name] = total
    return sizes


def _safetensors_header(file: Path) -> dict[str, Any]:
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


def resident_bytes(weights: dict[str, int], offload: Offload) -> int:
    """Device bytes the weights occupy between jobs and during one, under `offload`."""
    if offload is Offload.NONE:
        return sum(weights.values())
    if offload is Offload.MODEL:
        return max(weights.values(), default=0)  # the largest component, while it runs
    return 0  # group offload: a few layers at a time, within the headroom


def check_device_memory(model: str, device: str, weights: dict[str, int], options: MemoryOptions) -> None:
    """Refuse to load `model` on `device` when its resident weights plus the headroom do not fit
    in the device's free memory. CPU devices are not checked: their memory is the host's."""
    if not device.startswith("cuda"):
        return
    free, total = torch.cuda.mem_get_info(torch.device(device))
    needed = resident_bytes(weights, options.offload)
    headroom = int(options.headroom_gib * GIB)
    summary = ", ".join(f"{name} {size / GIB:.2f}" for name, size in sorted(weights.items(), key=lambda item: -item[1]))
    if needed + headroom > free:
        advice = {
            Offload.NONE: "set DARKROOM_OFFLOAD=model (one component on the device at a time) or group",
            Offload.MODEL: "set DARKROOM_OFFLOAD=group (layers streamed from CPU memory)",
            Offload.GROUP: "free the device or lower DARKROOM_VRAM_HEADROOM_GIB",
        }[options.offload]
        raise InsufficientMemoryError(
            f"{model} does not fit on {device}: {free / GIB:.1f} GiB free of {total / GIB:.1f} GiB, and it "
            f"needs {needed / GIB:.1f} GiB of weights with offload={options.offload.value} (components in "
            f"GiB: {summary}) plus {options.headroom_gib:g} GiB headroom; {advice}, or serve fewer models "
            "per worker."
        )
    log.info(
        "%s fits on %s: %.1f GiB resident (offload=%s) + %.1f GiB headroom, %.1f GiB free",
        model, device, needed / GIB, options.offload.value, options.headroom_gib, free / GIB,
    )


def check_host_memory(model: str, weights: dict[str, int], options: MemoryOptions) -> None:
    """Offloaded weights live in host memory (pinned, for group offload's streams): refuse when
    the host does not have them available."""
    if options.offload is Offload.NONE:
        return
    import psutil  # accelerate's dependency

    available = psutil.virtual_memory().available
    needed = sum(weights.values())
    if needed > available:
        raise InsufficientMemoryError(
            f"{model} with offload={options.offload.value} keeps {needed / GIB:.1f} GiB of weights in host "
            f"memory, and the host has {available / GIB:.1f} GiB available."
        )


def place_pipeline(pipeline: Any, device: str, options: MemoryOptions) -> None:
    """Put the pipeline's weights where `options` says, and switch on the VAE's memory savers."""
    if options.offload is Offload.NONE:
        pipeline.to(device)
    elif options.offload is Offload.MODEL:
        pipeline.enable_model_cpu_offload(device=device)
    else:
        # diffusers' recommended group offload for these pipelines: leaf level, the next layer
        # prefetched on a side stream while the current one computes (CUDA only).
        pipeline.enable_group_offload(
            onload_device=torch.device(device),
            offload_device=torch.device("cpu"),
            offload_type="leaf_level",
            use_stream=device.startswith("cuda"),
        )
    if options.vae_tiling:
        pipeline.vae.enable_tiling()
    if options.vae_slicing:
        pipeline.vae.enable_slicing()


def reset_device_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(device))


def peak_device_gib(device: str) -> float | None:
    """The device's peak allocated memory since `reset_device_peak`, for the start-up log: what
    the warm-up's generation at the default size took, weights included."""
    if not device.startswith("cuda"):
        return None
    return torch.cuda.max_memory_allocated(torch.device(device)) / GIB
