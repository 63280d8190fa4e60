"""Regional `torch.compile` of a transformer's repeated blocks, once per worker when it loads a
model (`DARKROOM_COMPILE_TRANSFORMER`). A compiled transformer takes no cache hooks
(pipelines/acceleration/cache_hooks.py `cache_with_compile_refusal` says why) and no LoRA adapters
(the runner refuses them: each job's set would recompile the wrapped layers).
"""

from __future__ import annotations

from typing import Any


def compile_transformer(transformer: Any) -> None:
    """Regional compilation: each repeated block is compiled once and the code reused for every
    block, which compiles in a fraction of the whole model's time (diffusers'
    `compile_repeated_blocks`). The graphs are built at the first call: the worker's warm-up."""
    transformer.compile_repeated_blocks(fullgraph=False, dynamic=None)
