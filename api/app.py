"""The FastAPI app, built by a factory from a settings object so tests can build their own."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.deps import Services
from api.errors import install_error_handlers
from api.image_fetch import FetchSlots
from api.request_body import RequestBodyGuard
from api.request_context import DarkroomAPI
from api.routes import docs, events, files, health, images, metrics, models, videos
from darkroom.settings import Settings, get_settings
from storage.blobs import make_blob_store
from storage.db import make_engine, make_session_factory
from worker.celery_app import make_celery

log = logging.getLogger("darkroom.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = make_engine(settings.resolved_database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not settings.auth_enabled:
            log.warning("DARKROOM_API_KEYS is empty: the API is open to anyone who can reach it")
        if settings.content_redirect and not settings.s3_bucket:
            log.warning(
                "DARKROOM_CONTENT_REDIRECT has no effect with the local blob store: "
                "/content streams the bytes itself"
            )
        yield
        engine.dispose()

    # Its request-id middleware sits outside everything, so even a 500 carries x-request-id.
    # FastAPI's own /openapi.json, /docs and /redoc answer anyone; api/routes/docs.py serves them
    # behind the key.
    app = DarkroomAPI(
        title="Darkroom", version="0.1.0", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None
    )
    app.state.services = Services(
        settings=settings,
        sessions=make_session_factory(engine),
        blobs=make_blob_store(settings),
        celery=make_celery(settings),
        started_at=int(time.time()),
        image_fetches=FetchSlots(settings),
    )
    install_error_handlers(app)
    app.add_middleware(
        RequestBodyGuard,
        limit=settings.resolved_max_request_bytes,
        # File uploads stream to the blob store and hold themselves to their purpose's caps on the
        # way (api/file_intake.py); here only a backstop: the largest file and its few fields.
        backstops={"/v1/files": settings.max_file_bytes + 1024 * 1024},
    )
    app.state.metrics_registry = metrics.make_registry(app.state.services)
    for router in (
        videos.router,
        images.router,
        files.router,
        events.router,
        models.router,
        health.router,
        metrics.router,
        docs.router,
    ):
        app.include_router(router)
    return app
