"""LoRA adapters per request on the tiny pipelines: they change the output, only for their job,
and a missing or unfitting adapter fails the job and leaves the pipeline as it was."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from pipelines.loader import load_runner, resolve_model_path
from pipelines.runners.lora import LoraAdapters, resolve_adapter_file
from pipelines.spec.lora_names import LoraError
from pipelines.spec.registry import get_model
from pipelines.spec.types import LoraWeight
from pipelines.tiny.lora import build_tiny_lora


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, models_dir: Path) -> Path:
    """Adapters for the tiny models: `<model>/a` and `<model>/b` (different seeds), a third one
    for tiny-qwen-image, and a tiny-flux one filed under tiny-qwen-image (incompatible)."""
    directory = tmp_path_factory.mktemp("loras")
    for model in ("tiny-qwen-image", "tiny-qwen-image-edit", "tiny-wan", "tiny-flux"):
        model_dir = resolve_model_path(get_model(model), models_dir)
        for name, seed in (("a", 1), ("b", 2)):
            build_tiny_lora(model_dir, directory / model / name, seed=seed)
    qwen = resolve_model_path(get_model("tiny-qwen-image"), models_dir)
    build_tiny_lora(qwen, directory / "tiny-qwen-image" / "c", seed=4)
    flux = resolve_model_path(get_model("tiny-flux"), models_dir)
    build_tiny_lora(flux, directory / "tiny-qwen-image" / "from-flux", seed=3)
    return directory


@pytest.fixture(scope="module")
def runners(models_dir: Path, lora_dir: Path) -> dict:
    return {
        model: load_runner(get_model(model), models_dir, lora_dir=lora_dir, lora_cache_size=2)
        for model in ("tiny-qwen-image", "tiny-qwen-image-edit", "tiny-wan", "tiny-flux")
    }


def output(runner, request) -> np.ndarray:
    return output_of(runner.run(request))


def output_of(result) -> np.ndarray:
    if hasattr(result, "frames"):
        return result.frames
    return np.stack([np.asarray(image) for image in result.images])


def lora(*names_and_scales) -> tuple[LoraWeight, ...]:
    return tuple(LoraWeight(name, scale) for name, scale in names_and_scales)


def adapters_in(runner) -> set[str]:
    return {name for names in runner.pipeline.get_list_adapters().values() for name in names}


@pytest.mark.parametrize(
    "model", ["tiny-qwen-image", "tiny-qwen-image-edit", "tiny-wan", "tiny-flux"]
)
def test_a_lora_changes_its_job_only_and_the_next_job_runs_on_the_base_weights(
    runners, make_request, model
):
    runner = runners[model]
    request = make_request(model, num_inference_steps=2)
    if model == "tiny-qwen-image-edit":
        from PIL import Image

        request = dataclasses.replace(request, images=(Image.new("RGB", (64, 64), (200, 40, 40)),))
    base = output(runner, request)
    with_lora = runner.run(dataclasses.replace(request, lora=lora((f"{model}/a", 1.0))))
    after = output(runner, request)
    assert not np.array_equal(output_of(with_lora), base)
    assert np.array_equal(after, base)  # bit-identical: disable_lora, nothing fused
    assert with_lora.timings["lora"] >= 0


def test_scales_and_two_adapters_each_give_their_own_output(runners, make_request):
    runner = runners["tiny-qwen-image"]
    request = make_request("tiny-qwen-image", num_inference_steps=2)
    base = output(runner, request)
    a_full = output(runner, dataclasses.replace(request, lora=lora(("tiny-qwen-image/a", 1.0))))
    a_half = output(runner, dataclasses.replace(request, lora=lora(("tiny-qwen-image/a", 0.5))))
    both = dataclasses.replace(
        request, lora=lora(("tiny-qwen-image/a", 0.8), ("tiny-qwen-image/b", 0.3))
    )
    first, again = output(runner, both), output(runner, both)
    assert len({base.tobytes(), a_full.tobytes(), a_half.tobytes(), first.tobytes()}) == 4
    assert np.array_equal(first, again)
    assert np.array_equal(output(runner, request), base)


def test_a_full_cache_evicts_the_least_recently_used_adapter(models_dir, lora_dir, make_request):
    runner = load_runner(
        get_model("tiny-qwen-image"), models_dir, lora_dir=lora_dir, lora_cache_size=2
    )
    adapters: LoraAdapters = runner.loras
    [name_a] = adapters.prepare(lora(("tiny-qwen-image/a", 1.0)))
    [name_b] = adapters.prepare(lora(("tiny-qwen-image/b", 1.0)))
    adapters.prepare(lora(("tiny-qwen-image/a", 1.0)))  # a is now the most recently used
    [name_c] = adapters.prepare(lora(("tiny-qwen-image/c", 1.0)))
    assert adapters.loaded == [name_a, name_c]
    assert adapters_in(runner) == {name_a, name_c}  # b's layers are deleted from the pipeline
    request = make_request("tiny-qwen-image", num_inference_steps=2)
    fresh = runners_base(models_dir, request)
    assert np.array_equal(output(runner, request), fresh)


def runners_base(models_dir, request) -> np.ndarray:
    """The base output from a pipeline that never saw an adapter."""
    return output(load_runner(get_model("tiny-qwen-image"), models_dir), request)


def test_an_adapter_missing_anywhere_in_the_request_fails_it_before_anything_loads(
    runners, make_request
):
    runner = runners["tiny-qwen-image"]
    request = make_request("tiny-qwen-image", num_inference_steps=2)
    base = output(runner, request)
    loaded = runner.loras.loaded
    for names in (
        lora(("no/such-adapter", 1.0)),
        lora(("tiny-qwen-image/b", 1.0), ("tiny-qwen-image/nope", 1.0)),
    ):
        with pytest.raises(LoraError) as error:
            runner.run(dataclasses.replace(request, lora=names))
        assert error.value.code == "lora_not_found"
        assert str(lora_dir_of(runner)) not in str(error.value)  # no worker path reaches the tenant
    assert runner.loras.loaded == loaded
    assert np.array_equal(output(runner, request), base)


def lora_dir_of(runner) -> Path:
    return runner.loras.lora_dir


@pytest.mark.parametrize(
    "name", ["../tiny-qwen-image/a", "/etc/passwd", "a/../../b", ".hidden", "a\\b"]
)
def test_the_worker_refuses_names_outside_its_lora_directory(lora_dir, name):
    with pytest.raises(LoraError) as error:
        resolve_adapter_file(name, lora_dir)
    assert error.value.code == "lora_not_found"


def test_an_adapter_for_another_model_fails_and_leaves_the_pipeline_clean(runners, make_request):
    runner = runners["tiny-qwen-image"]
    request = make_request("tiny-qwen-image", num_inference_steps=2)
    base = output(runner, request)
    before = adapters_in(runner)
    with pytest.raises(LoraError) as error:
        runner.run(dataclasses.replace(request, lora=lora(("tiny-qwen-image/from-flux", 1.0))))
    assert error.value.code == "lora_incompatible"
    assert "QwenImageTransformer2DModel" in str(error.value)
    assert adapters_in(runner) == before
    assert np.array_equal(output(runner, request), base)


def test_an_adapter_that_fails_inside_diffusers_is_removed_again(runners, lora_dir, make_request):
    """Shapes that pass the layer check but not peft's loading: ranks that disagree."""
    runner = runners["tiny-qwen-image"]
    state = load_file(lora_dir / "tiny-qwen-image" / "a" / "pytorch_lora_weights.safetensors")
    key = next(key for key in state if key.endswith("lora_A.weight"))
    state[key] = state[key][:2].contiguous()  # rank 2 for A, rank 4 for B
    target = lora_dir / "tiny-qwen-image" / "ranks-disagree"
    target.mkdir()
    save_file(state, target / "pytorch_lora_weights.safetensors")
    request = make_request("tiny-qwen-image", num_inference_steps=2)
    base = output(runner, request)
    before = adapters_in(runner)
    with pytest.raises(LoraError) as error:
        runner.run(dataclasses.replace(request, lora=lora(("tiny-qwen-image/ranks-disagree", 1.0))))
    assert error.value.code == "lora_incompatible"
    assert adapters_in(runner) == before
    assert np.array_equal(output(runner, request), base)


def test_only_safetensors_adapters_are_read(runners, lora_dir):
    (lora_dir / "pickled.bin").write_bytes(b"\x80\x04not a tensor")
    (lora_dir / "broken").mkdir()
    (lora_dir / "broken" / "pytorch_lora_weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(LoraError) as error:
        resolve_adapter_file("pickled.bin", lora_dir)
    assert error.value.code == "lora_not_found"
    with pytest.raises(LoraError) as error:
        runners["tiny-qwen-image"].loras.prepare(lora(("broken", 1.0)))
    assert error.value.code == "lora_invalid"
    assert str(error.value) == "LoRA 'broken' could not be read as a LoRA adapter."  # no exception text


def test_an_adapter_that_may_not_be_used_looks_missing_and_the_log_says_why(tmp_path, caplog):
    """A tenant learns nothing of what the shared directory holds: a pickle, a directory of
    several adapters, an empty one and a file over the size cap answer as a missing name does."""
    (tmp_path / "pickled.bin").write_bytes(b"\x80\x04")
    (tmp_path / "several").mkdir()
    for name in ("one", "two"):
        (tmp_path / "several" / f"{name}.safetensors").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "huge.safetensors").write_bytes(b"x" * 101)

    def refusal(name: str) -> str:
        with pytest.raises(LoraError) as error:
            resolve_adapter_file(name, tmp_path, max_bytes=100)
        assert error.value.code == "lora_not_found"
        return str(error.value).replace(f"'{name}'", "'<name>'")

    missing = refusal("no-such-adapter")
    caplog.clear()
    for name, why in [
        ("pickled.bin", "not a .safetensors file"),
        ("several", "holds 2 .safetensors files"),
        ("empty", "holds no .safetensors"),
        ("huge.safetensors", "is 101 bytes, over DARKROOM_LORA_MAX_BYTES (100)"),
    ]:
        assert refusal(name) == missing
        assert why in caplog.text and str(tmp_path) not in missing
    assert resolve_adapter_file("huge.safetensors", tmp_path, max_bytes=101) == tmp_path / "huge.safetensors"


def test_an_adapter_over_the_size_cap_is_refused_before_it_is_read(runners, lora_dir):
    # Not safetensors at all: read, it would be `lora_invalid`; refused by its size, it is not read.
    (lora_dir / "too-big").mkdir()
    (lora_dir / "too-big" / "pytorch_lora_weights.safetensors").write_bytes(b"\0" * 4096)
    adapters = runners["tiny-qwen-image"].loras
    capped = LoraAdapters(adapters.pipeline, lora_dir, capacity=2, max_bytes=4095)
    with pytest.raises(LoraError) as error:
        capped.prepare(lora(("too-big", 1.0)))
    assert error.value.code == "lora_not_found"


def test_a_repo_id_resolves_offline_from_the_hugging_face_cache(tmp_path, monkeypatch, lora_dir):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--ink-style" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    (snapshot / "ink.safetensors").write_bytes(b"")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_adapter_file("someone/ink-style", lora_dir) == snapshot / "ink.safetensors"
    assert (
        resolve_adapter_file("someone/ink-style/ink.safetensors", lora_dir)
        == snapshot / "ink.safetensors"
    )
    with pytest.raises(LoraError):
        resolve_adapter_file("someone/other-style", lora_dir)


def test_a_cancelled_job_leaves_the_base_weights(runners, make_request):
    runner = runners["tiny-qwen-image"]
    request = make_request("tiny-qwen-image", num_inference_steps=4)
    base = output(runner, request)

    def cancel(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt  # anything the step callback raises

    with pytest.raises(KeyboardInterrupt):
        runner.run(
            dataclasses.replace(request, lora=lora(("tiny-qwen-image/a", 1.0))), on_step=cancel
        )
    assert np.array_equal(output(runner, request), base)


def test_adapter_load_and_activation_cost(runners, make_request, capsys):
    """Figures for the report: first load of an adapter, and a job's activation once loaded."""
    runner = runners["tiny-qwen-image"]
    request = make_request(
        "tiny-qwen-image", num_inference_steps=2, lora=lora(("tiny-qwen-image/b", 0.7))
    )
    runner.run(request)
    started = time.perf_counter()
    for _ in range(5):
        with runner.loras.active(request.lora):
            pass
    activation_ms = (time.perf_counter() - started) / 5 * 1000
    loads = runner.loras.load_seconds.values()
    with capsys.disabled():
        print(
            f"\nLORA load {max(loads) * 1000:.1f} ms (slowest), activation {activation_ms:.2f} ms per job"
        )
    assert activation_ms < 1000


def test_a_sharded_group_runs_a_lora_as_one_process_does(runners, models_dir, tmp_path):
    """Every rank loads and turns on the adapter in its own runner (the worker hands each the same
    GenerationRequest); the sharded output matches the unsharded one."""
    from bench.processes import free_port
    from tests.unit.pipelines.runners.sharded_lora_ranks import REQUEST, WITH_LORA

    qwen = resolve_model_path(get_model("tiny-qwen-image"), models_dir)
    build_tiny_lora(qwen, tmp_path / "loras" / "a", seed=1)
    build_tiny_lora(qwen, tmp_path / "loras" / "proj-out", seed=1, modules=("proj_out",))
    init_method = f"tcp://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "tests.unit.pipelines.runners.sharded_lora_ranks"]
    args = [init_method, str(models_dir), str(tmp_path / "loras"), str(tmp_path)]
    ranks = [subprocess.Popen([*command, str(rank), *args]) for rank in (0, 1)]
    try:
        for rank in ranks:
            assert rank.wait(timeout=240) == 0
    finally:
        for rank in ranks:
            rank.kill()
    unsharded = load_runner(get_model("tiny-qwen-image"), models_dir, lora_dir=tmp_path / "loras")
    with_lora, base = output(unsharded, WITH_LORA)[0], output(unsharded, REQUEST)[0]
    sharded_lora, sharded_base = (
        np.load(tmp_path / f"{name}.npy").astype(int) for name in ("lora", "base")
    )
    assert np.abs(sharded_lora - with_lora).max() <= 1  # uint8 pixels; floats agree to ~1e-6
    assert np.abs(sharded_base - base).max() <= 1
    assert np.abs(sharded_lora - sharded_base).max() > 1
    assert np.array_equal(np.load(tmp_path / "base_again.npy"), np.load(tmp_path / "base.npy"))
