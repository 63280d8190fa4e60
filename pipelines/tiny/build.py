"""Build a tiny model by its registry name, once, whoever asks first: the loader does the first
time it resolves a `tiny-*` model (pipelines/loader.py `resolve_model_path`, which
`darkroom build-tiny-models` calls too).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock

from pipelines.tiny.flux import build_tiny_flux
from pipelines.tiny.qwen import build_tiny_qwen_image, build_tiny_qwen_image_edit
from pipelines.tiny.wan import build_tiny_wan, build_tiny_wan_i2v

TINY_BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny-qwen-image": build_tiny_qwen_image,
    "tiny-qwen-image-edit": build_tiny_qwen_image_edit,
    "tiny-wan": build_tiny_wan,
    "tiny-wan-i2v": build_tiny_wan_i2v,
    "tiny-flux": build_tiny_flux,
}


def build_tiny_model(name: str, target: Path) -> None:
    """Build tiny model `name` into directory `target`, unless it is already there.

    The build goes to a temporary directory beside `target` and is renamed into place, so a
    half-built model never exists at `target`; a file lock makes concurrent callers (several
    worker processes starting at once) build it once and the others wait and reuse it.
    """
    if name not in TINY_BUILDERS:
        raise KeyError(f"no tiny builder named {name!r}; known: {', '.join(sorted(TINY_BUILDERS))}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if target.exists():
            return
        # Holding the lock, any staging directory left here is from a build that crashed.
        for stale in target.parent.glob(f".{target.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
        try:
            # Fork the RNG so building does not disturb the caller's global torch seed.
            with torch.random.fork_rng(devices=[]):
                TINY_BUILDERS[name](staging)
            staging.chmod(0o755)  # mkdtemp makes it private to this user
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
