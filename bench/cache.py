"""`make bench` (cache part): each cache policy against no cache, for a fixed seed.

Per policy: wall time (median of `--repeats`), speed-up over no cache, per-stage timings (text
encode, denoise per step, decode: the job's own stored stages), the share of attention calls the
cache skipped, and the output's PSNR and max absolute difference (0-255 pixels) against the
uncached output. The runner is Darkroom's own (`pipelines.loader.load_runner`), so the policies go
through the same path a job's `cache` takes.

On the tiny random-weight models the skip decisions are NOT representative of real checkpoints:
a policy's speed-up and quality here show the mechanism works and what it costs, not what it
buys on Qwen-Image or Wan. `bench/full_size.py` runs the full-size architecture on a GPU.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipelines.runners.base import Runner
from pipelines.spec.cache_policy import NO_CACHE, CachePolicy, FirstBlockCache, MagCache, TaylorSeer
from pipelines.spec.types import GenerationRequest, ImageOutput

POLICIES: dict[str, CachePolicy | None] = {
    "none": None,
    "first_block_cache 0.1": FirstBlockCache(threshold=0.1),
    "first_block_cache 0.3": FirstBlockCache(threshold=0.3),
    "taylorseer 5/3/1": TaylorSeer(interval=5, warmup_steps=3, order=1),
    "magcache 0.06": MagCache(),
}


class AttentionCounter:
    """Counts attention computations actually run: every attention module's `to_q` projection
    runs once per computation, and a cache that skips a block or predicts an attention output
    skips it. PyTorch forward hooks on `to_q`, which no cache hook touches."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.calls = 0
        self._handles = [
            module.register_forward_hook(self._count)
            for name, module in transformer.named_modules()
            if name.endswith(".to_q")
        ]

    def _count(self, *_args: Any) -> None:
        self.calls += 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass
class Row:
    policy: str
    wall_s: float
    timings: dict[str, float]
    attention_calls: int
    pixels: np.ndarray


def _pixels(output: Any) -> np.ndarray:
    if isinstance(output, ImageOutput):
        return np.stack([np.asarray(image, dtype=np.float64) for image in output.images])
    return output.frames.astype(np.float64)


def measure(
    runner: Runner,
    request: GenerationRequest,
    policy: str,
    cache: CachePolicy | None,
    repeats: int,
    *,
    count: bool = True,
) -> Row:
    """Run `request` with `cache` `repeats` times; the median wall time, and the last run's rest.

    `count=False` on a compiled transformer: a Python counter in a forward hook is guarded as a
    constant by dynamo, so every increment recompiles (measured: the recompile limit, then eager).
    """
    request = _with_cache(request, cache)
    counter = AttentionCounter(runner.pipeline.transformer if count else torch.nn.Module())
    walls = []
    try:
        for _ in range(repeats):
            counter.calls = 0
            _synchronize()
            started = time.perf_counter()
            output = runner.run(request)
            _synchronize()
            walls.append(time.perf_counter() - started)
    finally:
        counter.remove()
    return Row(policy, statistics.median(walls), output.timings, counter.calls, _pixels(output))


def _with_cache(request: GenerationRequest, cache: CachePolicy | None) -> GenerationRequest:
    return replace(request, cache=cache or NO_CACHE)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def print_table(rows: list[Row], title: str) -> None:
    base = rows[0]
    print(f"\n{title}")
    header = (
        f"{'policy':<24}{'wall s':>9}{'speed-up':>9}{'encode s':>9}{'step ms':>9}{'decode s':>9}"
        f"{'attn skipped':>13}{'PSNR dB':>9}{'max diff':>9}"
    )
    print(header)
    for row in rows:
        skipped = 1 - row.attention_calls / base.attention_calls if base.attention_calls else 0.0
        print(
            f"{row.policy:<24}{row.wall_s:>9.3f}{base.wall_s / row.wall_s:>8.2f}x"
            f"{row.timings.get('encode', 0):>9.3f}{row.timings.get('denoise_per_step', 0) * 1000:>9.1f}"
            f"{row.timings.get('decode', 0):>9.3f}{skipped:>12.0%} {psnr(row.pixels, base.pixels):>8.1f}"
            f"{float(np.abs(row.pixels - base.pixels).max()):>9.0f}"
        )


def tiny_request(runner: Runner, size: int, steps: int) -> GenerationRequest:
    spec = runner.spec
    return GenerationRequest(
        prompt="a lighthouse on a cliff at dusk, waves below",
        width=size,
        height=size,
        seed=1234,
        num_inference_steps=steps,
        negative_prompt=spec.negative_prompt,
        num_frames=spec.frames.frames_for(spec.frames.default_seconds) if spec.frames else None,
        images=(Image.new("RGB", (size, size), (90, 120, 200)),) if spec.max_input_images else (),
    )


def main() -> None:
    from pipelines.loader import load_runner
    from pipelines.spec.registry import get_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny-qwen-image,tiny-wan,tiny-flux")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models-dir", type=Path, default=Path(".darkroom/models"))
    args = parser.parse_args()

    print(
        f"cache policies on {platform.machine()} ({torch.get_num_threads()} torch threads), "
        f"torch {torch.__version__}; tiny random weights: skip decisions NOT representative"
    )
    for name in args.models.split(","):
        runner = load_runner(get_model(name), args.models_dir)
        request = tiny_request(runner, args.size, args.steps)
        rows = [
            measure(runner, request, policy, cache, args.repeats)
            for policy, cache in POLICIES.items()
            if cache is None or cache.type != "magcache" or runner.spec.mag_ratios
        ]
        print_table(rows, f"{name} {args.size}x{args.size}, {args.steps} steps, median of {args.repeats}")


if __name__ == "__main__":
    main()
