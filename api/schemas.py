"""Request and response shapes, kept apart from the ORM. Requests forbid unknown fields, so a
misspelt extension parameter is a 400 rather than silently ignored."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.spec.cache_policy import CachePolicy
from pipelines.spec.lora_names import MAX_SCALE, MIN_SCALE, check_lora_name
from pipelines.spec.params import JobParams
from storage.models import Job, JobStatus

Item = TypeVar("Item", bound=BaseModel)
Prompt = Annotated[str, Field(max_length=10_000)]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]
Steps = Annotated[int, Field(ge=1, le=200)]
Scale = Annotated[float, Field(ge=0, le=30)]


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("prompt", check_fields=False)
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty")
        return value


class LoraAdapter(StrictRequest):
    """One LoRA adapter for a job: a name the worker resolves (pipelines/lora_names.py) and its scale."""

    path_or_id: str
    scale: Annotated[float, Field(ge=MIN_SCALE, le=MAX_SCALE)] = 1.0

    @field_validator("path_or_id")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        return check_lora_name(value)


class GenerationExtensions(StrictRequest):
    """Darkroom's own fields, sent by the SDK through `extra_body`."""

    seed: Seed | None = None
    num_inference_steps: Steps | None = None
    negative_prompt: Annotated[str, Field(max_length=10_000)] | None = None
    # Classifier-free guidance (Wan, FLUX's distilled guidance) and Qwen-Image's true CFG; a model
    # without the knob refuses it (api/submission.py `generation_params`).
    guidance_scale: Scale | None = None
    true_cfg_scale: Scale | None = None
    # This job's cache acceleration, e.g. {"type": "taylorseer", "interval": 4}; none: the model's.
    cache: CachePolicy | None = None
    # LoRA adapters for this job only, e.g. [{"path_or_id": "styles/ink", "scale": 0.8}]; how many
    # and whether the model takes them is checked per deployment (api/submission.py `_lora`).
    lora: list[LoraAdapter] | None = None
    # Where this job's completed/failed/cancelled event is POSTed (else the key's default endpoint).
    webhook_url: Annotated[str, Field(max_length=2048)] | None = None


class ImageReference(BaseModel):
    """An input image named by reference (api/input_reference.py): `input_reference` on a video,
    an edit's `images[]` and `mask` in its JSON form. Form fields (`input_reference[image_url]`,
    from the SDK's `extra_body`) arrive as the same object. Exactly one of the two is sent."""

    model_config = ConfigDict(extra="forbid")

    # An https URL, or a data: URL (`data:image/png;base64,...`); its size is checked once decoded.
    image_url: str | None = None
    file_id: Annotated[str, Field(max_length=256)] | None = None


class VideoCreateRequest(GenerationExtensions):
    prompt: Prompt
    model: str | None = None
    seconds: str | None = None
    size: str | None = None
    input_reference: ImageReference | None = None

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds_as_string(cls, value: object) -> object:
        # The SDK sends a string; JSON callers may send a number.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class VideoRemixRequest(StrictRequest):
    """`POST /v1/videos/{id}/remix`: a new prompt for the source's recorded parameters. Nothing
    else of the generation may change (that is a new video), so seed, steps and the rest are
    unknown fields here; only where to send the new job's event is the caller's to choose."""

    prompt: Prompt
    webhook_url: Annotated[str, Field(max_length=2048)] | None = None


class ImageRequestBase(GenerationExtensions):
    prompt: Prompt
    model: str | None = None
    n: Annotated[int, Field(ge=1, le=10)] = 1
    size: str | None = None
    response_format: Literal["url", "b64_json"] = "b64_json"
    output_format: Literal["png", "webp", "jpeg"] = "png"
    output_compression: Annotated[int, Field(ge=0, le=100)] | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    # Accepted for compatibility; these models have no notion of them (docs/api.md, Errors).
    quality: Literal["low", "medium", "high", "auto", "standard", "hd"] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    stream: bool = False
    partial_images: Annotated[int, Field(ge=0, le=3)] | None = None


class ImageGenerateRequest(ImageRequestBase):
    style: Literal["vivid", "natural"] | None = None
    moderation: Literal["low", "auto"] | None = None


class ImageEditRequest(ImageRequestBase):
    # The JSON form's images and mask; multipart sends them as the file parts `image` and `mask`.
    images: Annotated[list[ImageReference], Field(min_length=1, max_length=16)] | None = None
    mask: ImageReference | None = None
    input_fidelity: Literal["high", "low"] | None = None
    # Extension, masked edits only: how far the masked area is re-noised (diffusers' `strength`);
    # 1 repaints it from noise. None: the model's default (shown on /v1/models).
    strength: Annotated[float, Field(gt=0, le=1)] | None = None


class ErrorObject(BaseModel):
    code: str
    message: str


class Video(BaseModel):
    id: str
    object: Literal["video"] = "video"
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int
    created_at: int
    completed_at: int | None
    expires_at: int | None
    model: str
    prompt: str | None
    seconds: str
    size: str
    remixed_from_video_id: str | None = None
    error: ErrorObject | None

    @classmethod
    def from_job(cls, job: Job) -> Video:
        params = JobParams.from_stored(job.params)
        # OpenAI's video has no `cancelled`; a cancelled job is deleted in the same request, and
        # in the instant between the two it reads as failed with code "cancelled".
        status = JobStatus.FAILED if job.status == JobStatus.CANCELLED else job.status
        return cls(
            id=job.id,
            status=status,
            progress=job.progress,
            created_at=_unix(job.created_at),
            completed_at=_unix(job.completed_at),
            expires_at=_unix(job.expires_at),
            model=job.model,
            prompt=params.prompt,
            seconds=params.seconds,
            size=params.size,
            remixed_from_video_id=job.remixed_from_video_id,
            error=_error_of(job),
        )


class ListPage(BaseModel, Generic[Item]):
    """A page of a cursor listing, in the shape both of the SDK's pages read: it follows `last_id`
    for videos, and the last item's id for files and batches; they are the same id."""

    object: Literal["list"] = "list"
    data: list[Item]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, rows: Sequence[Any], limit: int, item: Callable[[Any], Item]) -> ListPage[Item]:
        """The page for `rows`, fetched as up to `limit + 1`: one more than fits means there is more."""
        page = rows[:limit]
        return cls(
            data=[item(row) for row in page],
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=len(rows) > limit,
        )


VideoList = ListPage[Video]


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: str
    size: str
    background: str | None = None


class ImageJob(BaseModel):
    """`GET /v1/images/{id}`: Darkroom's extension to follow an image job past the wait bound."""

    id: str
    object: Literal["image.job"] = "image.job"
    status: JobStatus
    progress: int
    created_at: int
    completed_at: int | None
    model: str
    size: str
    n: int
    error: ErrorObject | None


class ModelSizes(BaseModel):
    rule: str
    default: str  # WIDTHxHEIGHT
    multiple: int
    min_side: int
    max_side: int


class ModelSeconds(BaseModel):
    allowed: list[str]
    default: str
    fps: int
    rule: str
    frames: dict[str, int]  # each allowed `seconds` -> the frame count generated


class ModelDefaults(BaseModel):
    """What a request gets when it leaves a parameter out; null: the model has no such knob."""

    num_inference_steps: int
    guidance_scale: float | None
    true_cfg_scale: float | None
    negative_prompt: str | None
    strength: float | None  # masked edits; null: the model takes no mask


class Model(BaseModel):
    """OpenAI's model object; the fields after `owned_by` are Darkroom's limits and defaults."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    family: str
    sizes: ModelSizes
    seconds: ModelSeconds | None  # video models only
    max_images: int  # `n`
    max_input_images: int
    mask: bool  # takes a `mask` on /v1/images/edits
    # Every model here paints every pixel: `background="transparent"` is refused for all of them.
    transparent_background: bool = False
    max_num_inference_steps: int
    defaults: ModelDefaults


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def _unix(moment) -> int | None:
    return int(moment.timestamp()) if moment is not None else None


def _error_of(job: Job) -> ErrorObject | None:
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        return None
    return ErrorObject(code=job.error_code or "failed", message=job.error_message or "")
