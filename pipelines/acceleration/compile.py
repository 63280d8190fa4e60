"""Regional `torch.compile` of a transformer's repeated blocks, once per worker when it loads a
model (`DARKROOM_COMPILE_TRANSFORMER`). A compiled transformer takes no cache hooks and no LoRA
adapters: both would recompile it on every job (pipelines/spec/checks.py refuses them, and says why).
"""

from __future__ import annotations

from typing import Any


def compile_transformer(transformer: Any) -> None:
    """Regional compilation: each repeated block is compiled once and the code reused for every
    block, which compiles in a fraction of the whole model's time (diffusers'
    `compile_repeated_blocks`). The graphs are built at the first call: the worker's warm-up."""
    transformer.compile_repeated_blocks(fullgraph=False, dynamic=None)
