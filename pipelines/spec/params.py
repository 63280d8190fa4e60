"""A job's parameters: the request as the worker will run it, every default resolved when the job
was accepted (the seed included), so a retry or a remix runs exactly the same generation.

The API writes one `JobParams` per job and the worker reads it back; in the `jobs.params` column it
is JSON (`to_stored`). Rows written before the parameters had a type carry the same keys with no
`version` and `"lora": null`; `from_stored` reads them as version 1.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.spec.cache_policy import CachePolicy
from pipelines.spec.types import LoraWeight

ImageFormat = Literal["png", "webp", "jpeg"]


class JobParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Bumped when a field changes meaning; a worker refuses a version it does not know rather
    # than run something else than what was accepted.
    version: Literal[1] = 1
    prompt: str
    width: int
    height: int
    seed: int
    num_inference_steps: int
    negative_prompt: str | None = None
    guidance_scale: float | None = None  # None: the model has no such knob
    true_cfg_scale: float | None = None
    cache: CachePolicy | None = None  # None: the worker's default for the model
    lora: tuple[LoraWeight, ...] = ()  # active for this job only, in order
    # Images.
    num_images: int = 1
    output_format: ImageFormat = "png"
    output_compression: int | None = None  # None: the format's default quality
    partial_images: int = 0  # previews to store while it denoises (streamed requests)
    mask_input: int | None = Field(default=None, ge=0)  # the input that is the edit's mask
    strength: float | None = None  # masked edits only
    # Videos.
    seconds: str | None = None
    num_frames: int | None = None
    fps: int | None = None

    @field_validator("lora", mode="before")
    @classmethod
    def _no_adapters(cls, value: object) -> object:
        return () if value is None else value  # rows before JobParams stored none as null

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> JobParams:
        """The parameters of a stored row; pydantic's ValidationError if they are not readable."""
        return cls.model_validate(data)

    def to_stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def image_quality(self) -> int:
        """What the lossy formats are encoded at: the request's compression, else 90."""
        return 90 if self.output_compression is None else self.output_compression
