"""`/v1/models`: what this deployment serves, with each model's limits and defaults as extension
fields, so a client can build a valid request without reading our docs."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import OwnerDep, ServicesDep
from api.errors import not_found
from api.schemas import Model, ModelDefaults, ModelList, ModelSeconds, ModelSizes
from pipelines.spec.registry import REGISTRY, ModelSpec

router = APIRouter(prefix="/v1/models", tags=["models"])


def _model(spec: ModelSpec, created: int) -> Model:
    rule, frames = spec.size, spec.frames
    seconds = None
    if frames is not None:
        seconds = ModelSeconds(
            allowed=list(frames.allowed_seconds),
            default=frames.default_seconds,
            fps=frames.fps,
            rule=frames.describe(),
            frames={value: frames.frames_for(value) for value in frames.allowed_seconds},
        )
    return Model(
        id=spec.name,
        created=created,
        owned_by=spec.owned_by,
        family=spec.family,
        sizes=ModelSizes(
            rule=rule.describe(),
            default="{}x{}".format(*rule.default),
            multiple=rule.multiple,
            min_side=rule.min_side,
            max_side=rule.max_side,
        ),
        seconds=seconds,
        max_images=spec.max_images,
        max_input_images=spec.max_input_images,
        mask=spec.inpaint_pipeline_class is not None,
        max_num_inference_steps=spec.max_steps,
        defaults=ModelDefaults(
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance_scale,
            true_cfg_scale=spec.true_cfg_scale,
            negative_prompt=spec.negative_prompt,
            strength=spec.strength if spec.inpaint_pipeline_class is not None else None,
        ),
    )


@router.get("", response_model=ModelList)
def list_models(services: ServicesDep, _owner: OwnerDep) -> ModelList:
    created = services.started_at
    return ModelList(data=[_model(REGISTRY[name], created) for name in services.settings.models])


@router.get("/{model_id:path}", response_model=Model)
def retrieve_model(model_id: str, services: ServicesDep, _owner: OwnerDep) -> Model:
    if model_id not in services.settings.models:
        raise not_found("model", model_id, param="model")
    return _model(REGISTRY[model_id], services.started_at)
