"""build_app(settings, service): assembly only: routers, error handlers, limits, lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from .. import __version__
from ..config import Settings
from ..service.service import JobService
from .dialects.a1111.router import router as a1111_router
from .dialects.modelslab.router import install as install_modelslab
from .dialects.modelslab.router import router as modelslab_router
from .dialects.openai.request_id import RequestIdHeader
from .dialects.native.router import router as native_router
from .dialects.openai.router import router as openai_router
from .dialects.workers_ai.router import router as workers_ai_router
from .errors import install_error_handlers
from .metrics import Metrics
from .metrics import metrics_router
from .openapi import PUBLIC, install_openapi
from .playground.router import DEMO_WARNING, STATIC_PATH, static_files
from .playground.router import router as playground_router
from .security import BodyLimit, JsonByDefault, KeyAuth

__all__ = ["build_app", "DEMO_WARNING"]

_READINESS = {"type": "object", "required": ["status", "database", "worker"],
              "properties": {"status": {"enum": ["ready", "not ready"]}, "database": {"type": "string"},
                             "worker": {"type": "string"}, "queue_length": {"type": "integer"}}}


def build_app(settings: Settings, service: JobService) -> FastAPI:
    """The ASGI app for ``service``; starting it starts the service's worker."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="sdserve", version=__version__, lifespan=lifespan,
                  description="Self-hosted Stable Diffusion with Workers AI, OpenAI, ModelsLab and A1111 dialects.")
    app.state.settings = settings
    app.state.service = service
    app.state.keys = KeyAuth(settings.api_keys, service.keys, service.limiter)
    app.state.metrics = Metrics(service)
    install_error_handlers(app, settings.openai_error_types)
    install_openapi(app)
    app.add_middleware(JsonByDefault, prefixes=("/ai/run/", "/client/v4/accounts/"))
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestIdHeader, prefixes=("/v1/images", "/v1/models"))
    if settings.cors_allow_origins:
        # Closed unless configured. Outermost, so preflights and error responses carry the
        # headers too. Keys travel in headers (or ModelsLab bodies), never cookies: no credentials.
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_allow_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["X-Sdserve-Seed", "X-Sdserve-Job", "X-Sdserve-Warning",
                                                               "X-Sdserve-Run-Ms", "Server-Timing", "x-request-id"])
    app.include_router(workers_ai_router)
    app.include_router(openai_router)
    app.include_router(a1111_router)
    app.include_router(modelslab_router)
    install_modelslab(service)  # its webhook body, registered before any job can finish
    app.include_router(native_router)
    app.include_router(metrics_router(settings.metrics_public))
    app.include_router(playground_router)
    app.mount(STATIC_PATH, static_files(), name="playground-static")

    @app.get("/healthz", tags=["operations"], openapi_extra=PUBLIC)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], openapi_extra=PUBLIC, responses={
        200: {"content": {"application/json": {"schema": _READINESS}}},
        503: {"description": "Not ready: the database does not answer or the worker stopped.",
              "content": {"application/json": {"schema": _READINESS}}}})
    async def readyz() -> JSONResponse:
        """Readiness (503 until the database answers and the worker runs), with the device,
        dtype and loaded models."""
        state = service.health()
        body: dict[str, Any] = {"status": "ready" if state["ready"] else "not ready", "demo": settings.demo,
                                "queue_length": service.queue_length(), **state, **service.engine.health()}
        return JSONResponse(body, status_code=200 if state["ready"] else 503)

    return app
