"""GPU only: the full-size Qwen-Image architecture with random bf16 weights, timed through
Darkroom's own runner, attention backend choice, compile and cache policies.

Timing does not depend on weight values, so random weights give real per-step and end-to-end
times at the real shapes (20B transformer, 7B text encoder, the real VAE) without the checkpoint.
Quality figures (PSNR against the uncached run) and cache skip decisions on random weights are
NOT representative. Each result is appended to `--out/results.jsonl` as it is measured, so a run
cut short still reports what it finished.

    python -m bench.full_size --out /tmp/out --steps 50 --size 1024

`--small` builds a scaled-down model of the same classes: a CPU dry run of this script.
`--offload model|group` measures only that offload mode: the model is built in host memory and
placed by Darkroom's loader code, and the row reports the device's peak memory with the time.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from bench.cache import Row, measure, psnr
from pipelines.acceleration.attention import set_attention_backend
from pipelines.acceleration.cache_hooks import MAG_RATIOS, cache_enabled
from pipelines.acceleration.compile import compile_transformer
from pipelines.acceleration.memory import MemoryOptions, Offload, place_pipeline
from pipelines.runners.image import TextToImageRunner
from pipelines.spec.cache_policy import NO_CACHE, FirstBlockCache, MagCache, TaylorSeer
from pipelines.spec.registry import get_model
from pipelines.spec.types import GenerationRequest
from pipelines.tiny.qwen import QWEN_SPECIAL_TOKENS, build_qwen_tokenizer

# Qwen/Qwen-Image's scheduler/scheduler_config.json.
_SCHEDULER = dict(
    base_image_seq_len=256,
    base_shift=0.5,
    max_image_seq_len=8192,
    max_shift=0.9,
    shift=1.0,
    shift_terminal=0.02,
    time_shift_type="exponential",
    use_dynamic_shifting=True,
)
# Qwen2.5-VL-7B-Instruct, the text encoder Qwen-Image ships.
_TEXT_FULL = dict(
    hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, rope_theta=1000000.0,
    rope_scaling={"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
)  # fmt: skip
_VISION_FULL = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584)
_TEXT_SMALL = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    rope_theta=1000000.0, rope_scaling={"mrope_section": [2, 3, 3], "rope_type": "default", "type": "default"},
)  # fmt: skip
_VISION_SMALL = dict(depth=2, hidden_size=32, intermediate_size=32, num_heads=2, out_hidden_size=64)


def build_pipeline(device: str, dtype: torch.dtype, small: bool) -> QwenImagePipeline:
    """Qwen-Image's components at their real configs (diffusers' defaults for the transformer
    and VAE are Qwen-Image's), randomly initialised directly on `device`."""
    tokenizer = build_qwen_tokenizer()  # offline: a small BPE; ids fit the real vocabulary
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    text = dict(_TEXT_SMALL if small else _TEXT_FULL)
    text.update(
        vocab_size=max(152064, len(tokenizer)) if not small else len(tokenizer),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    text_config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=_VISION_SMALL if small else _VISION_FULL,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    # Built in float32 and cast one component at a time: the peak stays under the card's memory
    # (the 20B transformer is 80 GB in float32) and no module initialises in bfloat16.
    with torch.device(device):
        if small:
            transformer = QwenImageTransformer2DModel(
                num_layers=4, attention_head_dim=32, num_attention_heads=4, joint_attention_dim=64,
                axes_dims_rope=(8, 12, 12),
            )  # fmt: skip
            vae = AutoencoderKLQwenImage(base_dim=32, num_res_blocks=1)
        else:
            transformer = QwenImageTransformer2DModel()
            vae = AutoencoderKLQwenImage()
        transformer = transformer.to(dtype)
        vae = vae.to(dtype)
        text_encoder = Qwen2_5_VLForConditionalGeneration(text_config).eval().to(dtype)
    pipeline = QwenImagePipeline(
        transformer=transformer.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler(**_SCHEDULER),
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


class Report:
    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "results.jsonl"
        self.started = time.perf_counter()

    def write(self, **record: Any) -> None:
        record["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        line = json.dumps(record, default=str)
        print(line, flush=True)
        with self.path.open("a") as file:
            file.write(line + "\n")

    def row(self, name: str, row: Row, reference: Row | None, steps: int) -> None:
        # Forward hooks inside compiled blocks do not fire: no count, rather than a false 100 %.
        counted = reference and row.attention_calls and reference.attention_calls
        skipped = round(1 - row.attention_calls / reference.attention_calls, 3) if counted else None
        self.write(
            row=name,
            steps=steps,
            wall_s=round(row.wall_s, 3),
            encode_s=round(row.timings["encode"], 3),
            step_ms=round(row.timings["denoise_per_step"] * 1000, 1),
            decode_s=round(row.timings["decode"], 3),
            attention_skipped=skipped,
            psnr_db=round(psnr(row.pixels, reference.pixels), 1) if reference else None,
            max_memory_gb=round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None,
        )


def _capture_magcache_calibration() -> list[list[float]]:
    """diffusers prints MagCache's calibrated ratios and clears them at the last step; keep a copy
    (bench only: Darkroom serves MagCache only with ratios shipped for the checkpoint)."""
    from diffusers.hooks import mag_cache

    captured: list[list[float]] = []
    original = mag_cache.MagCacheBlockHook._advance_step

    def advance(self, state):
        if self.config.calibrate and state.step_index + 1 >= self.config.num_inference_steps:
            captured.append(list(state.calibration_ratios))
        return original(self, state)

    mag_cache.MagCacheBlockHook._advance_step = advance
    return captured


def _compiled_rows(runner: TextToImageRunner, request: GenerationRequest, report: Report, steps: int) -> None:
    """The compiled transformer, alone and with each cache (its ratios calibrated uncompiled)."""
    transformer = runner.pipeline.transformer
    if "calibrated" not in MAG_RATIOS:
        from diffusers.hooks import MagCacheConfig

        calibration = _capture_magcache_calibration()
        with cache_enabled(transformer, MagCacheConfig(calibrate=True, num_inference_steps=steps)):
            runner.run(replace(request, cache=NO_CACHE))
        MAG_RATIOS["calibrated"] = torch.tensor(calibration[-1])
    uncompiled = measure(runner, request, "uncompiled", None, 1)
    started = time.perf_counter()
    compile_transformer(transformer)
    runner.run(replace(request, num_inference_steps=2))
    report.write(event="compiled", warm_up_s=round(time.perf_counter() - started, 1))
    rows = [
        ("compile", None),
        ("compile + first_block_cache 0.1", FirstBlockCache(threshold=0.1)),
        ("compile + taylorseer 5/3/1", TaylorSeer(interval=5, warmup_steps=3, order=1)),
        ("compile + magcache 0.06", MagCache()),
        ("compile again (after caches)", None),
    ]
    for name, cache in rows:
        try:
            report.row(name, measure(runner, request, name, cache, 1, count=False), uncompiled, steps)
        except Exception as error:
            report.write(row=name, error=f"{type(error).__name__}: {error}"[:300])
    cfg = replace(request, negative_prompt=" ", true_cfg_scale=4.0)
    report.row("compile + true CFG 4.0", measure(runner, cfg, "cfg", None, 1, count=False), None, steps)


def _offload_row(args: argparse.Namespace, device: str, dtype: torch.dtype) -> None:
    report = Report(args.out)
    pipeline = build_pipeline("cpu", dtype, args.small)
    place_pipeline(pipeline, device, MemoryOptions(offload=Offload(args.offload)))
    runner = TextToImageRunner(get_model("Qwen/Qwen-Image"), pipeline)
    request = GenerationRequest(
        prompt="A coffee shop entrance features a chalkboard sign reading 'Qwen Coffee'",
        width=args.size, height=args.size, seed=42, num_inference_steps=args.steps,
    )  # fmt: skip
    runner.run(replace(request, num_inference_steps=2))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    name = f"offload={args.offload}"
    report.row(name, measure(runner, request, name, None, 1), None, args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--small", action="store_true", help="scaled-down model: a CPU dry run")
    parser.add_argument("--budget-s", type=float, default=420, help="skip rows once past this")
    parser.add_argument("--compiled-only", action="store_true", help="only the torch.compile rows")
    parser.add_argument("--offload", choices=["model", "group"], help="only this offload mode's row")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if args.offload:
        _offload_row(args, device, dtype)
        return
    report = Report(args.out)
    report.write(
        event="start", torch=torch.__version__, device=torch.cuda.get_device_name() if device == "cuda" else platform.machine(),
        size=args.size, steps=args.steps, small=args.small,
    )  # fmt: skip

    started = time.perf_counter()
    pipeline = build_pipeline(device, dtype, args.small)
    transformer = pipeline.transformer
    report.write(event="built", seconds=round(time.perf_counter() - started, 1),
                 transformer_params_b=round(sum(p.numel() for p in transformer.parameters()) / 1e9, 2))  # fmt: skip
    spec = replace(get_model("Qwen/Qwen-Image"), mag_ratios="calibrated")
    runner = TextToImageRunner(spec, pipeline)
    # SGLang's anchor (248 ms/step) is one transformer pass per step: no negative prompt, no CFG.
    request = GenerationRequest(
        prompt="A coffee shop entrance features a chalkboard sign reading 'Qwen Coffee'",
        width=args.size, height=args.size, seed=42, num_inference_steps=args.steps,
    )  # fmt: skip
    short = replace(request, num_inference_steps=2)

    def over_budget() -> bool:
        return time.perf_counter() - report.started > args.budget_s

    runner.run(short)  # CUDA context, cuBLAS plans
    if args.compiled_only:
        _compiled_rows(runner, request, report, args.steps)
        report.write(event="done")
        return
    backends = {}
    for backend in ("native", "_native_cudnn", "_native_flash", "_native_efficient"):
        try:
            transformer.set_attention_backend(backend)
            runner.run(short)
            row = measure(runner, replace(request, num_inference_steps=6), backend, None, 1)
            backends[backend] = row.timings["denoise_per_step"]
            report.write(row=f"backend {backend}", step_ms=round(backends[backend] * 1000, 1))
        except Exception as error:  # a kernel refusing these shapes is a result too
            report.write(row=f"backend {backend}", error=f"{type(error).__name__}: {error}"[:300])
    transformer.set_attention_backend("native")
    defaults = measure(runner, request, "diffusers defaults (native SDPA)", None, 1)
    report.row("diffusers defaults (native SDPA)", defaults, defaults, args.steps)

    chosen = set_attention_backend(transformer, "auto", device)
    fastest = min(backends, key=backends.get) if backends else "native"
    report.write(event="backend", darkroom_auto=chosen, fastest_measured=fastest)
    transformer.set_attention_backend(fastest)
    best = measure(runner, request, f"fastest backend ({fastest})", None, 1)
    report.row(f"fastest backend ({fastest})", best, defaults, args.steps)

    calibration = _capture_magcache_calibration()
    policies = [
        ("first_block_cache 0.1", FirstBlockCache(threshold=0.1)),
        ("first_block_cache 0.2", FirstBlockCache(threshold=0.2)),
        ("taylorseer 5/3/1", TaylorSeer(interval=5, warmup_steps=3, order=1)),
    ]
    for name, cache in policies:
        if over_budget():
            break
        report.row(f"{fastest} + {name}", measure(runner, request, name, cache, 1), best, args.steps)
    if not over_budget():
        # MagCache needs per-checkpoint ratios: one calibration run (skips nothing), then the run.
        from diffusers.hooks import MagCacheConfig

        with cache_enabled(transformer, MagCacheConfig(calibrate=True, num_inference_steps=args.steps)):
            runner.run(replace(request, cache=NO_CACHE))
        if calibration:
            MAG_RATIOS["calibrated"] = torch.tensor(calibration[-1])
            row = measure(runner, request, "magcache", MagCache(), 1)
            report.row(f"{fastest} + magcache 0.06 (calibrated here)", row, best, args.steps)

    if not over_budget():
        # Darkroom's default request for this model: true CFG 4.0 with a negative prompt.
        cfg = replace(request, negative_prompt=" ", true_cfg_scale=4.0)
        report.row("true CFG 4.0 (two passes per step)", measure(runner, cfg, "cfg", None, 1), None, args.steps)
    if not over_budget():
        _compiled_rows(runner, request, report, args.steps)
    report.write(event="done")


if __name__ == "__main__":
    main()
