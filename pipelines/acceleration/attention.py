"""Which attention kernels a transformer runs: diffusers' attention backends
(`set_attention_backend`), the platform's best chosen once per worker when it loads a model.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger("darkroom.pipelines")


def attention_backend_candidates(device: str) -> list[str]:
    """Backends to try on `device`, best first; `native` (PyTorch SDPA) works everywhere."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return ["native"]
    if torch.version.hip is not None:
        # ROCm: AMD's aiter flash attention, as a Hub kernel (must be in the HF cache offline).
        return ["aiter_fa2_hub", "native"]
    major, _minor = torch.cuda.get_device_capability(torch.device(device))
    # FA3 from a local build, else the Hub kernel the CUDA image's `kernels` package fetches.
    hopper = ["_flash_3", "_flash_3_hub"] if major == 9 else []
    return [*hopper, "flash", "sage", "native"]


def set_attention_backend(transformer: Any, requested: str, device: str) -> str:
    """Set the first usable backend of `requested` ("auto": the platform's best) and return it.

    diffusers checks a backend's package when it is set; whether the kernel accepts this model's
    inputs (a mask, a head size) shows only when it runs, which the worker's warm-up does
    (`fall_back_to_native`).
    """
    candidates = attention_backend_candidates(device) if requested == "auto" else [requested, "native"]
    for backend in dict.fromkeys(candidates):
        if backend == "native":
            return backend  # diffusers' default: setting it again only logs a warning
        try:
            transformer.set_attention_backend(backend)
        except (RuntimeError, ValueError, ImportError) as error:
            log.info("attention backend %s is not usable here: %s", backend, error)
            continue
        return backend
    raise RuntimeError("no attention backend could be set, not even native")


def fall_back_to_native(transformer: Any) -> str:
    transformer.set_attention_backend("native")
    return "native"
