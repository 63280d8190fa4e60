"""The API and the worker's parent process never import torch, diffusers or transformers: they
import pipelines/spec/ and nothing heavier, so the API starts in a second and the worker's parent
never holds a CUDA context across the fork."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pipelines.spec

HEAVY = ("torch", "diffusers", "transformers")
# What the API process and the worker's parent import, each at start-up.
ENTRY_POINTS = (
    "api.app",
    "darkroom.settings",
    "darkroom.cli",
    "darkroom.embedded",
    "worker.main",
    "worker.sweeper",
    "worker.webhook_worker",
)
SPEC_MODULES = tuple(
    f"pipelines.spec.{module.name}" for module in pkgutil.iter_modules(pipelines.spec.__path__)
)


def heavy_imports_of(module: str) -> list[str]:
    """The heavy libraries a fresh interpreter holds after importing `module`."""
    code = (
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        f"print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))"
    )
    return json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))


def test_nothing_the_api_and_the_worker_parent_import_pulls_in_torch():
    assert "pipelines.spec.registry" in SPEC_MODULES  # the room's modules were found
    loaded = {module: heavy_imports_of(module) for module in ENTRY_POINTS + SPEC_MODULES}
    assert {module: heavy for module, heavy in loaded.items() if heavy} == {}
