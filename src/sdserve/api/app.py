"""build_app(settings, service): assembly only: routers, error handlers, limits, lifecycle.

Each dialect comes from its record (``api/dialects/__init__.py``): routers, middleware
needs and startup hook; nothing here names a dialect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from sdserve import __version__
from sdserve.api.dialects import DIALECTS
from sdserve.api.errors import install_error_handlers
from sdserve.api.metrics import Metrics, metrics_router
from sdserve.api.openapi import install_openapi
from sdserve.api.playground.router import DEMO_WARNING, STATIC_PATH, static_files
from sdserve.api.playground.router import router as playground_router
from sdserve.api.responses import PUBLIC
from sdserve.api.security import BodyLimit, JsonByDefault, KeyAuth
from sdserve.config import Settings
from sdserve.service.service import JobService

__all__ = ["build_app", "DEMO_WARNING"]

# sdserve's own response headers, readable by browser pages of other origins.
_EXPOSED = ("X-Sdserve-Seed", "X-Sdserve-Job", "X-Sdserve-Warning", "X-Sdserve-Run-Ms", "Server-Timing")
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
    install_error_handlers(app, settings)
    install_openapi(app)
    app.add_middleware(JsonByDefault, prefixes=tuple(p for d in DIALECTS for p in d.json_by_default))
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    for d in DIALECTS:
        for m in d.middleware:  # outside the body limit, so they see its 413s too
            app.add_middleware(m.cls, *m.args, **m.kwargs)
    if settings.cors_allow_origins:
        # Closed unless configured. Outermost, so preflights and error responses carry the
        # headers too. Keys travel in headers (or ModelsLab bodies), never cookies: no credentials.
        exposed = [*_EXPOSED, *(h for d in DIALECTS for h in d.exposed_headers)]
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_allow_origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=exposed)
    for d in DIALECTS:
        for r in d.routers:
            app.include_router(r)
        if d.on_build is not None:
            d.on_build(service)  # before the app starts, so before any job can finish
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
