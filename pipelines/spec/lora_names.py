"""How a request names a LoRA adapter, and how a job fails when one cannot run. Pure data, no
torch: the API checks a request against these rules, and the worker checks again before it touches
its disk. Which pipelines take adapters at all is a pipeline trait (pipelines/spec/pipeline_traits.py).

A `path_or_id` is a relative name, never a path a tenant chooses on the worker: one or more
segments of letters, digits, `.`, `_` and `-`, separated by `/`, each starting with a letter or a
digit (so no `..`, no hidden files, no absolute paths, no backslashes). The worker looks it up
under its LoRA directory (`DARKROOM_LORA_DIR`); if it is not there and its first two segments
look like a Hugging Face repo id (`org/name`), in the local Hugging Face cache, read offline:
nothing is ever downloaded for a job. Either names a `.safetensors` file, or a directory holding
`pytorch_lora_weights.safetensors` or exactly one `.safetensors` file.
"""

from __future__ import annotations

import re

# A job whose adapter is missing or does not fit fails with one of these codes: the request's
# fault, not the server's (a synchronous image request answers it with a 400 on `lora`).
LORA_NOT_FOUND = "lora_not_found"  # not in the LoRA directory nor the local Hugging Face cache
LORA_INVALID = "lora_invalid"  # not a readable safetensors LoRA file
LORA_INCOMPATIBLE = "lora_incompatible"  # made for another model: layers or shapes differ
LORA_UNSUPPORTED = "lora_unsupported"  # this worker cannot run LoRA on the model (e.g. compiled)
LORA_ERROR_CODES = frozenset({LORA_NOT_FOUND, LORA_INVALID, LORA_INCOMPATIBLE, LORA_UNSUPPORTED})

WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what diffusers' `save_lora_weights` writes

MAX_NAME_LENGTH = 256
# An adapter file larger than this is refused before it is read (DARKROOM_LORA_MAX_BYTES): a name
# may point at a base model's multi-GB weights in the Hugging Face cache. Large LoRAs of 20B
# models (rank 128, bf16) stay well under it.
DEFAULT_MAX_ADAPTER_BYTES = 2 * 1024**3
MIN_SCALE, MAX_SCALE = -4.0, 4.0  # negative scales are legitimate (slider LoRAs push both ways)

_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_NAME = re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})*$")

NAME_RULE = (
    "a name relative to the worker's LoRA directory, or a Hugging Face repo id in its local cache "
    "('org/name', optionally '/file.safetensors'): segments of letters, digits, '.', '_' and '-' "
    "separated by '/', each starting with a letter or digit; absolute paths and '..' are refused"
)


class LoraError(Exception):
    """A requested adapter cannot run here; `code` is the job's error code. The message is the
    tenant's to read, so it names the adapter as they did, never a path on the worker, and never
    what else the worker holds: every adapter that is not there, or is there but may not be used
    (not safetensors, too large, a directory of several), gets the same `not_available` message,
    the reason going to the worker's log only."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_lora_name(value: str) -> str:
    """`value` if it follows the naming rule; ValueError saying what is allowed otherwise."""
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"a LoRA name is at most {MAX_NAME_LENGTH} characters")
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid LoRA name; expected {NAME_RULE}")
    return value


def not_available(path_or_id: str) -> LoraError:
    """What a tenant hears of an adapter that is missing, or present but not allowed: the same."""
    return LoraError(
        LORA_NOT_FOUND,
        f"No LoRA adapter '{path_or_id}' is available on this worker: name a .safetensors adapter in "
        "its LoRA directory or a repository in its Hugging Face cache (adapters are never "
        "downloaded for a job).",
    )
