"""The record each dialect package exports: everything the app needs to know about it.

``api/dialects/__init__.py`` lists the records; ``app.py`` (routers, middleware, startup
hooks), ``errors.py`` (which renderer answers a path) and ``openapi.py`` (which error body a
path documents) are built by iterating over that list, so a dialect lives in its own folder.
This module imports no dialect, so every dialect can import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.middleware import Middleware

from sdserve.config import Settings
from sdserve.errors import SdserveError
from sdserve.service.service import JobService

__all__ = ["Dialect", "Renderer", "retry_headers"]

# A domain error as the dialect's error response.
Renderer = Callable[[SdserveError], JSONResponse]


@dataclass(frozen=True)
class Dialect:
    """One API dialect, as the app assembles it."""

    name: str
    # Paths the dialect owns: its errors are rendered, and documented, in its shape. The
    # default dialect (native) also answers every path no dialect claims.
    prefixes: tuple[str, ...]
    routers: tuple[APIRouter, ...]
    render_error: Renderer
    # The error body's pydantic model: the OpenAPI document names it for every 4xx/5xx.
    error_model: type[BaseModel]
    # Called once with the service when the app is built, before any job can finish
    # (ModelsLab registers its webhook body).
    on_build: Callable[[JobService], None] | None = None
    # POST bodies under these prefixes are JSON whatever Content-Type says.
    json_by_default: tuple[str, ...] = ()
    # ASGI middleware of the dialect's own, outside the body limit (so its 413s pass through).
    middleware: tuple[Middleware, ...] = ()
    # Response headers of its own that browsers may read cross-origin (when CORS is on).
    exposed_headers: tuple[str, ...] = ()
    # The renderer as the server's settings configure it (OpenAI's error vocabulary); None:
    # ``render_error`` whatever the settings.
    renderer_for: Callable[[Settings], Renderer] | None = None

    def renderer(self, settings: Settings | None) -> Renderer:
        return self.renderer_for(settings) if self.renderer_for is not None and settings is not None \
            else self.render_error


def retry_headers(err: SdserveError) -> dict[str, str]:
    """``Retry-After`` for errors that say when to try again (rate limit, full queue)."""
    retry = getattr(err, "retry_after", None)
    return {"Retry-After": str(max(1, int(round(retry))))} if retry is not None else {}
