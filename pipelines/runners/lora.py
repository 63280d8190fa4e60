"""LoRA adapters per request on a resident pipeline, through diffusers' LoRA loader mixins.

Adapters are loaded once and kept in the pipeline, up to `capacity` per pipeline; the least
recently used one is evicted first with `delete_adapters`, which frees its weights. A job turns on
only its own adapters with its scales (`enable_lora`, `set_adapters`), and after it, whatever
happened, `disable_lora` puts the pipeline back on its base weights: bit-identical to a pipeline
that never saw an adapter (tests/unit/pipelines/runners/test_lora.py). `set_adapters([])` is no way back
(diffusers raises a KeyError), and nothing is fused: fusing writes into the base weights, and
unfusing is not exact in low precision.

Before anything is injected, an adapter is read through the pipeline's own `lora_state_dict` (so
every format diffusers converts is checked as it will load) and checked against the transformer:
every layer it adapts must exist there with the same shapes, and it may hold nothing but LoRA
layers (diffusers writes a FLUX adapter's norm layers straight into the base model, where they
would outlive the job). A load that fails anyway is cleaned up, so the next job finds the
pipeline as it was. Errors carry the job's error code and never name a path on the worker, nor
say what else it holds: an adapter that is missing and one that may not be used look the same;
the reason, and any exception, go to the worker's log.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.spec.lora_names import (
    DEFAULT_MAX_ADAPTER_BYTES,
    LORA_INCOMPATIBLE,
    LORA_INVALID,
    LORA_UNSUPPORTED,
    WEIGHT_NAME,
    LoraError,
    check_lora_name,
    not_available,
)
from pipelines.spec.types import LoraWeight

log = logging.getLogger("darkroom.pipelines")

_TRANSFORMER = "transformer."


def resolve_adapter_file(path_or_id: str, lora_dir: Path, max_bytes: int = DEFAULT_MAX_ADAPTER_BYTES) -> Path:
    """The `.safetensors` file `path_or_id` names (pipelines/spec/lora_names.py has the rule),
    at most `max_bytes` long. Whatever stands in the way, the tenant hears the same thing
    (`not_available`); the worker's log says what it was."""
    try:
        check_lora_name(path_or_id)  # the API checked it too; this is the worker's own guard
    except ValueError as error:
        raise _refused(path_or_id, str(error)) from None
    local = Path(lora_dir) / path_or_id
    if local.exists():
        file = _weights_file(local, path_or_id)
    elif len(segments := path_or_id.split("/")) >= 2 and (snapshot := _cached_snapshot("/".join(segments[:2]))):
        file = _weights_file(snapshot.joinpath(*segments[2:]), path_or_id)
    else:
        raise _refused(path_or_id, "neither in the LoRA directory nor a repository in the Hugging Face cache")
    size = file.stat().st_size
    if size > max_bytes:
        raise _refused(path_or_id, f"{file} is {size} bytes, over DARKROOM_LORA_MAX_BYTES ({max_bytes})")
    return file


def _refused(path_or_id: str, why: str) -> LoraError:
    log.warning("LoRA %r refused: %s", path_or_id, why)
    return not_available(path_or_id)


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError):
        return None


def _weights_file(path: Path, path_or_id: str) -> Path:
    if path.is_file():
        if path.suffix != ".safetensors":
            # A pickle (.bin, .pt) can run code when it is loaded.
            raise _refused(path_or_id, f"{path} is not a .safetensors file; only safetensors are loaded")
        return path
    if path.is_dir():
        if (path / WEIGHT_NAME).is_file():
            return path / WEIGHT_NAME
        files = sorted(child for child in path.glob("*.safetensors") if child.is_file())
        if len(files) == 1:
            return files[0]
        if files:
            raise _refused(path_or_id, f"{path} holds {len(files)} .safetensors files; a name must pick one")
    raise _refused(path_or_id, f"{path} holds no .safetensors adapter file")


def _file_key(file: Path) -> str:
    """Identifies the file's contents as loaded: an adapter replaced on disk loads anew."""
    stat = file.stat()
    return f"{file.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"


class LoraAdapters:
    """The adapters loaded into one pipeline, least recently used first."""

    def __init__(
        self, pipeline: Any, lora_dir: Path, capacity: int, max_bytes: int = DEFAULT_MAX_ADAPTER_BYTES
    ) -> None:
        self.pipeline = pipeline
        self.lora_dir = Path(lora_dir)
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._loaded: OrderedDict[str, str] = OrderedDict()  # file key -> adapter name
        self.load_seconds: dict[str, float] = {}  # adapter name -> how long its load took

    @property
    def loaded(self) -> list[str]:
        """Adapter names in the pipeline, least recently used first."""
        return list(self._loaded.values())

    @contextmanager
    def active(self, loras: Sequence[LoraWeight]) -> Iterator[None]:
        """The request's adapters at their scales for one pipeline call; the base weights after."""
        if not loras:
            yield
            return
        names = self.prepare(loras)
        try:
            self.pipeline.enable_lora()
            self.pipeline.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
            yield
        finally:
            self.pipeline.disable_lora()

    def prepare(self, loras: Sequence[LoraWeight]) -> list[str]:
        """Load the adapters not loaded yet and return every adapter name, in request order.
        Every adapter is found and checked before any is loaded or evicted, so a missing or
        unfitting one changes nothing."""
        if not hasattr(self.pipeline, "load_lora_weights"):
            raise LoraError(
                LORA_UNSUPPORTED, f"{type(self.pipeline).__name__} takes no LoRA adapters."
            )
        if len(loras) > self.capacity:
            raise LoraError(
                LORA_UNSUPPORTED,
                f"This worker holds at most {self.capacity} LoRA adapters per model; the job asks for {len(loras)}.",
            )
        found = [
            (lora.path_or_id, resolve_adapter_file(lora.path_or_id, self.lora_dir, self.max_bytes))
            for lora in loras
        ]
        keys = [_file_key(file) for _, file in found]
        if len(set(keys)) < len(keys):
            raise LoraError(
                LORA_INVALID,
                "The job names one adapter file twice; name each adapter once, with its scale.",
            )
        for key in keys:
            if key in self._loaded:
                self._loaded.move_to_end(key)  # so loading the others cannot evict it
        missing = [
            (path_or_id, file, key)
            for (path_or_id, file), key in zip(found, keys, strict=True)
            if key not in self._loaded
        ]
        for path_or_id, file, _key in missing:
            self._check_fits(path_or_id, file)  # before any eviction: a bad adapter costs nothing
        for path_or_id, file, key in missing:
            name = "lora_" + hashlib.sha256(key.encode()).hexdigest()[:16]
            self._load(path_or_id, file, name)
            self._loaded[key] = name
            self._evict(keep=set(keys))  # after the load: one that fails evicts nothing
        return [self._loaded[key] for key in keys]

    def _evict(self, keep: set[str]) -> None:
        while len(self._loaded) > self.capacity:
            key = next(key for key in self._loaded if key not in keep)
            name = self._loaded.pop(key)
            self._delete(name)
            log.info("LoRA adapter %s evicted (cache of %d)", name, self.capacity)

    def _load(self, path_or_id: str, file: Path, name: str) -> None:
        started = time.perf_counter()
        model = type(self.pipeline.transformer).__name__
        try:
            self.pipeline.load_lora_weights(
                str(file.parent),
                weight_name=file.name,
                adapter_name=name,
                use_safetensors=True,
                local_files_only=True,
            )
        except Exception as error:
            self._delete(name)
            log.warning("LoRA %r failed to load into %s: %s: %s", path_or_id, model, type(error).__name__, error)
            raise LoraError(
                LORA_INCOMPATIBLE, f"LoRA '{path_or_id}' does not fit {model}: its layers do not load into it."
            ) from error
        finally:
            if self._adapter_names():
                self.pipeline.disable_lora()  # loaded adapters stay off until a job turns them on
        if name not in self._adapter_names():
            raise LoraError(
                LORA_INCOMPATIBLE,
                f"LoRA '{path_or_id}' holds no layers diffusers loads into {model}.",
            )
        self.load_seconds[name] = time.perf_counter() - started
        log.info("LoRA %s loaded as %s in %.3f s", path_or_id, name, self.load_seconds[name])

    def _check_fits(self, path_or_id: str, file: Path) -> None:
        """Refuse, before anything is injected, an adapter made for another model."""
        try:
            state = type(self.pipeline).lora_state_dict(
                str(file.parent), weight_name=file.name, use_safetensors=True, local_files_only=True
            )
        except Exception as error:
            log.warning("LoRA %r could not be read from %s: %s: %s", path_or_id, file, type(error).__name__, error)
            raise LoraError(LORA_INVALID, f"LoRA '{path_or_id}' could not be read as a LoRA adapter.") from error
        state = state[0] if isinstance(state, tuple) else state
        transformer = self.pipeline.transformer
        model = type(transformer).__name__
        incompatible = f"LoRA '{path_or_id}' does not fit {model}"
        if not any(key.startswith(_TRANSFORMER) for key in state):
            raise LoraError(
                LORA_INCOMPATIBLE, f"{incompatible}: it holds no weights for a transformer."
            )
        if extra := next((key for key in state if "lora" not in key), None):
            raise LoraError(
                LORA_INCOMPATIBLE,
                f"{incompatible}: it holds a weight that is not a LoRA layer ({extra}), which would change "
                "the base model for every later job.",
            )
        modules = dict(transformer.named_modules())
        hooked = _context_parallel_modules(transformer)
        for key, tensor in state.items():
            if not key.startswith(_TRANSFORMER):
                continue  # another component's (FLUX's text encoder): diffusers checks it on load
            module_name, _, kind = key.removeprefix(_TRANSFORMER).partition(".lora")
            module = modules.get(module_name)
            if module is None:
                raise LoraError(
                    LORA_INCOMPATIBLE,
                    f"{incompatible}: it adapts a layer {model} does not have ({module_name}).",
                )
            if hooked.fullmatch(module_name):
                raise LoraError(
                    LORA_INCOMPATIBLE,
                    f"{incompatible} sharded: it adapts {module_name}, whose output this worker gathers across ranks.",
                )
            expected = _expected_shape(module, kind, tensor)
            if expected is not None and tuple(tensor.shape) != expected:
                raise LoraError(
                    LORA_INCOMPATIBLE,
                    f"{incompatible}: {module_name} takes {tuple(expected)}-shaped {kind.strip('._')} "
                    f"weights, the adapter has {tuple(tensor.shape)}.",
                )

    def _adapter_names(self) -> set[str]:
        return {name for names in self.pipeline.get_list_adapters().values() for name in names}

    def _delete(self, name: str) -> None:
        if name in self._adapter_names():
            self.pipeline.delete_adapters([name])
        self.load_seconds.pop(name, None)


def _expected_shape(module: Any, kind: str, tensor: Any) -> tuple[int, int] | None:
    """The shape a Linear layer's LoRA factor must have (A: rank x in, B: out x rank); None when
    the layer is not a Linear or the tensor is not a factor matrix."""
    if tensor.ndim != 2 or not hasattr(module, "in_features"):
        return None
    if kind in ("_A.weight", ".down.weight"):
        return (tensor.shape[0], module.in_features)
    if kind in ("_B.weight", ".up.weight"):
        return (module.out_features, tensor.shape[1])
    return None


def _context_parallel_modules(transformer: Any) -> re.Pattern:
    """The modules a sharded transformer splits or gathers at (its `_cp_plan` keys): a LoRA
    wrapped around one would add its unsharded output to a gathered one. Matches nothing when
    the transformer is not sharded."""
    plan = getattr(transformer, "_cp_plan", None) or {}
    if getattr(transformer, "_parallel_config", None) is None or not plan:
        return re.compile(r"(?!)")
    return re.compile("|".join(re.escape(name).replace(r"\*", r"\d+") for name in plan))
