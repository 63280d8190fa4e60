"""The request as the worker will run it: one `JobParams` per job, every default resolved now and
recorded, then checked against the model and this deployment (pipelines/spec/checks.py) before
anything is stored. One builder per kind of job; the rules themselves live in the checks."""

from __future__ import annotations

import secrets
from typing import Any

from api.bodies import Upload
from api.errors import APIError, bad_request
from api.image_stream import check_stream_params
from api.schemas import GenerationExtensions, ImageRequestBase, VideoCreateRequest
from darkroom.settings import Settings
from pipelines.spec.checks import ParamRefused, check_input_image, check_params
from pipelines.spec.params import JobParams
from pipelines.spec.registry import ModelSpec
from pipelines.spec.types import LoraWeight
from storage.models import Job


def image_params(
    settings: Settings, spec: ModelSpec, body: ImageRequestBase, size: tuple[int, int], *, mask_input: int | None = None
) -> JobParams:
    """A generation's or an edit's parameters; `mask_input`: the index the edit's mask will have
    among its stored inputs (it is stored last), None without a mask."""
    check_stream_params(body)
    if body.background == "transparent":
        raise bad_request(
            f"The model '{spec.name}' paints every pixel, so it cannot make a transparent background; "
            "no model served here can. Send background 'opaque' or 'auto', or leave it out.",
            param="background",
            code="unsupported_parameter",
        )
    strength = getattr(body, "strength", None)  # edits only
    if mask_input is not None and strength is None:
        strength = spec.strength
    params = JobParams(
        **_generation(spec, body, size),
        num_images=body.n,
        output_format=body.output_format,
        output_compression=body.output_compression,
        partial_images=(body.partial_images or 0) if body.stream else 0,  # previews cost a decode each
        mask_input=mask_input,
        strength=strength,
    )
    return accepted(settings, spec, params)


def video_length(spec: ModelSpec, seconds: str | None) -> tuple[str, int]:
    """The video's `seconds` (the model's default if none) and the frame count it makes."""
    seconds = seconds or spec.frames.default_seconds
    try:
        return seconds, spec.frames.frames_for(seconds)
    except ValueError as error:
        raise bad_request(str(error), param="seconds") from None


def video_params(
    settings: Settings, spec: ModelSpec, body: VideoCreateRequest, size: tuple[int, int], length: tuple[str, int]
) -> JobParams:
    seconds, num_frames = length
    params = JobParams(**_generation(spec, body, size), seconds=seconds, num_frames=num_frames, fps=spec.frames.fps)
    return accepted(settings, spec, params)


def remix_params(source: Job, prompt: str) -> JobParams:
    """The source's parameters with the new prompt; nothing else changes, the seed included."""
    return JobParams.from_stored(source.params).model_copy(update={"prompt": prompt})


def accepted(settings: Settings, spec: ModelSpec, params: JobParams) -> JobParams:
    """`params` if `spec` can run them on this deployment; else the 400 naming the field."""
    try:
        check_params(spec, params, settings.deployment)
    except ParamRefused as refused:
        raise _bad_request(refused) from None
    return params


def check_inputs(spec: ModelSpec, uploads: list[Upload]) -> None:
    """Each input image a shape `spec` can use; else the 400 naming its field. Checked before the
    output size is fitted to the first one."""
    for upload in uploads:
        try:
            check_input_image(spec, upload.field, upload.width, upload.height)
        except ParamRefused as refused:
            raise _bad_request(refused) from None


def _bad_request(refused: ParamRefused) -> APIError:
    return APIError(400, refused.message, param=refused.param, code=refused.code)


def _generation(spec: ModelSpec, body: GenerationExtensions, size: tuple[int, int]) -> dict[str, Any]:
    """What every kind of job has: the request's values, or the model's defaults where it sent none."""
    width, height = size
    return {
        "prompt": body.prompt,
        "width": width,
        "height": height,
        "seed": body.seed if body.seed is not None else secrets.randbelow(2**31),
        "num_inference_steps": body.num_inference_steps or spec.steps,
        "negative_prompt": _or_default(body.negative_prompt, spec.negative_prompt),
        "guidance_scale": _or_default(body.guidance_scale, spec.guidance_scale),
        "true_cfg_scale": _or_default(body.true_cfg_scale, spec.true_cfg_scale),
        "cache": body.cache,
        "lora": tuple(LoraWeight(adapter.path_or_id, adapter.scale) for adapter in body.lora or ()),
    }


def _or_default(value: Any, default: Any) -> Any:
    return value if value is not None else default
