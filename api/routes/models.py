"""`/v1/models`: what this deployment serves."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import OwnerDep, ServicesDep
from api.errors import not_found
from api.schemas import Model, ModelList
from pipelines.registry import REGISTRY, ModelSpec

router = APIRouter(prefix="/v1/models", tags=["models"])


def _model(spec: ModelSpec, created: int) -> Model:
    return Model(id=spec.name, created=created, owned_by=spec.owned_by, family=spec.family)


@router.get("", response_model=ModelList)
def list_models(services: ServicesDep, _owner: OwnerDep) -> ModelList:
    created = services.started_at
    return ModelList(data=[_model(REGISTRY[name], created) for name in services.settings.models])


@router.get("/{model_id:path}", response_model=Model)
def retrieve_model(model_id: str, services: ServicesDep, _owner: OwnerDep) -> Model:
    if model_id not in services.settings.models:
        raise not_found("model", model_id, param="model")
    return _model(REGISTRY[model_id], services.started_at)
