"""`/openapi.json`, `/docs` and `/redoc`: the API's own description. They list every route and
extension field, so they sit behind the API key like the `/v1` routes, unless
`DARKROOM_OPENAPI_PUBLIC` opens them (to browse `/docs`, which a browser cannot send a key to)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from api.deps import ServicesDep, current_owner

OPENAPI_URL = "/openapi.json"


def _may_read_docs(request: Request, services: ServicesDep) -> None:
    if not services.settings.openapi_public:
        current_owner(request, services)  # a 401 without a valid key


router = APIRouter(include_in_schema=False, dependencies=[Depends(_may_read_docs)])


@router.get(OPENAPI_URL)
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} API")


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} API")
