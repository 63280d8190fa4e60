"""Offload, VAE memory savers and the start-up memory check (pipelines/acceleration/memory.py).

Offload runs here for real on the CPU: diffusers' hooks move weights between "devices" that are
both the CPU, which proves they are installed and change nothing in the output. Only the GPU's
free-memory query is faked (there is no GPU here), in the tests that say so.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers.hooks.group_offloading import _is_group_offload_enabled

from pipelines.acceleration import memory
from pipelines.acceleration.memory import (
    GIB,
    InsufficientMemoryError,
    MemoryOptions,
    Offload,
    check_device_memory,
    check_host_memory,
    component_weight_bytes,
    resident_bytes,
)
from pipelines.loader import load_runner, resolve_model_path
from pipelines.spec.registry import get_model

QWEN = get_model("tiny-qwen-image")


def pixels(output) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in output.images])


def test_weight_bytes_from_headers_match_the_loaded_components(t2i_runner, models_dir):
    weights = component_weight_bytes(resolve_model_path(QWEN, models_dir), torch.float32)
    components = t2i_runner.pipeline.components
    loaded = {
        name: sum(tensor.numel() * tensor.element_size() for tensor in module.state_dict().values())
        for name, module in components.items()
        if isinstance(module, torch.nn.Module)
    }
    assert set(weights) == set(loaded) == {"transformer", "text_encoder", "vae"}
    for name, size in weights.items():
        # state_dict() may list a tied tensor twice (the text encoder's embeddings); files store it once.
        assert size <= loaded[name] and size >= loaded[name] * 0.5, name


def test_weight_bytes_count_the_dtype_the_model_loads_in(models_dir):
    path = resolve_model_path(QWEN, models_dir)
    as_fp32 = component_weight_bytes(path, torch.float32)
    as_bf16 = component_weight_bytes(path, torch.bfloat16)
    assert as_bf16["transformer"] * 2 == as_fp32["transformer"]


def test_resident_bytes_per_offload_mode():
    weights = {"transformer": 40 * GIB, "text_encoder": 16 * GIB, "vae": GIB}
    assert resident_bytes(weights, Offload.NONE) == 57 * GIB
    assert resident_bytes(weights, Offload.MODEL) == 40 * GIB
    assert resident_bytes(weights, Offload.GROUP) == 0


def fake_gpu(monkeypatch, free_gib: float, total_gib: float = 80) -> None:
    """No GPU exists on this machine: stand in for CUDA's free-memory query."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (int(free_gib * GIB), int(total_gib * GIB)))


def test_a_full_device_refuses_with_the_numbers_and_what_to_change(monkeypatch):
    fake_gpu(monkeypatch, free_gib=30)
    weights = {"transformer": 40 * GIB, "text_encoder": 16 * GIB, "vae": GIB}
    with pytest.raises(InsufficientMemoryError) as refused:
        check_device_memory("Qwen/Qwen-Image", "cuda:0", weights, MemoryOptions())
    message = str(refused.value)
    for figure in ("30.0 GiB free of 80.0 GiB", "57.0 GiB of weights", "transformer 40.00", "8 GiB headroom"):
        assert figure in message
    assert "DARKROOM_OFFLOAD=model" in message
    # Model offload keeps only the largest component resident: 40 + 8 > 30 still refuses.
    with pytest.raises(InsufficientMemoryError, match="DARKROOM_OFFLOAD=group"):
        check_device_memory("Qwen/Qwen-Image", "cuda:0", weights, MemoryOptions(offload=Offload.MODEL))
    check_device_memory("Qwen/Qwen-Image", "cuda:0", weights, MemoryOptions(offload=Offload.GROUP))


def test_headroom_is_part_of_the_requirement(monkeypatch):
    fake_gpu(monkeypatch, free_gib=60)
    weights = {"transformer": 50 * GIB}
    check_device_memory("m", "cuda:0", weights, MemoryOptions(headroom_gib=10))
    with pytest.raises(InsufficientMemoryError, match="plus 10.5 GiB headroom"):
        check_device_memory("m", "cuda:0", weights, MemoryOptions(headroom_gib=10.5))


def test_cpu_devices_are_not_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: pytest.fail("queried a GPU for a CPU device"))
    check_device_memory("m", "cpu", {"transformer": 10**15}, MemoryOptions())


def test_offload_refuses_when_the_host_cannot_hold_the_weights():
    weights = {"transformer": 1 << 60}  # more than any host has
    check_host_memory("m", weights, MemoryOptions())  # resident on the device: the host is not asked
    with pytest.raises(InsufficientMemoryError, match="keeps 1073741824.0 GiB of weights in host memory"):
        check_host_memory("m", weights, MemoryOptions(offload=Offload.MODEL))


@pytest.mark.parametrize("offload", [Offload.MODEL, Offload.GROUP])
def test_offloaded_pipelines_make_the_same_image(t2i_runner, models_dir, make_request, offload):
    request = make_request("tiny-qwen-image", num_inference_steps=3)
    resident = pixels(t2i_runner.run(request))
    runner = load_runner(QWEN, models_dir, memory=MemoryOptions(offload=offload))
    if offload is Offload.MODEL:
        assert runner.pipeline._all_hooks  # accelerate's per-component hooks
    else:
        assert _is_group_offload_enabled(runner.pipeline.transformer)
    assert np.array_equal(pixels(runner.run(request)), resident)


def test_vae_tiling_and_slicing_are_switched_on(models_dir, make_request):
    runner = load_runner(QWEN, models_dir, memory=MemoryOptions(vae_tiling=True, vae_slicing=True))
    assert runner.pipeline.vae.use_tiling and runner.pipeline.vae.use_slicing
    output = runner.run(replace(make_request("tiny-qwen-image"), num_images=2))
    assert len(output.images) == 2


def test_the_loader_checks_memory_before_loading(monkeypatch, models_dir):
    checked = []
    monkeypatch.setattr(memory.torch.cuda, "mem_get_info", lambda device: checked.append(device) or (0, 80 * GIB))
    with pytest.raises(InsufficientMemoryError, match="tiny-qwen-image does not fit on cuda:0: 0.0 GiB free"):
        load_runner(QWEN, models_dir, device="cuda:0")
    assert checked == [torch.device("cuda:0")]
