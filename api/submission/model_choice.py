"""Which served model a request runs on, and the output size it asks of it."""

from __future__ import annotations

from api.deps import Services
from api.errors import bad_request
from pipelines.spec.registry import REGISTRY, Family, ModelSpec


def resolve_model(
    services: Services, name: str | None, family: Family, *, also: tuple[Family, ...] = ()
) -> ModelSpec:
    """The served model for this endpoint; without a name, the first served one of `family`.
    A named model may also be of the families in `also` (videos: image-to-video besides)."""
    served = [REGISTRY[served_name] for served_name in services.settings.models]
    accepted = (family, *also)
    if name is None:
        of_family = [spec for spec in served if spec.family == family]
        if not of_family:
            raise bad_request(f"This deployment serves no {family} model.", param="model", code="model_not_found")
        return of_family[0]
    spec = next((spec for spec in served if spec.name == name), None)
    wanted = " or ".join(accepted)
    if spec is None:
        names = ", ".join(s.name for s in served if s.family in accepted) or "none"
        raise bad_request(
            f"The model '{name}' is not served here. {wanted} models served: {names}.",
            param="model",
            code="model_not_found",
        )
    if spec.family not in accepted:
        raise bad_request(
            f"The model '{name}' is a {spec.family} model; this endpoint needs a {wanted} model.",
            param="model",
            code="model_not_supported",
        )
    return spec


def parse_size(spec: ModelSpec, size: str | None, rounded: bool = False) -> tuple[int, int]:
    """`size` as (width, height); "auto" or none: the model's default. `rounded` (images): each
    side is rounded to the model's multiple rather than refused (SizeRule.parse)."""
    if size is None or size == "auto":
        return spec.size.default
    try:
        return spec.size.parse(size, rounded=rounded)
    except ValueError as error:
        raise bad_request(f"{error} for model '{spec.name}'.", param="size") from None
