"""Domain error -> each dialect's error body, chosen by path prefix in one place.

Routes raise ``sdserve.errors`` exceptions; the handlers installed here render them with the
renderer of the dialect that owns the request path (each dialect record names its prefixes
and its renderer, in the dialect's own ``errors.py``). Request validation failures (pydantic)
become BadInput naming the offending field, so they take the same path.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sdserve.api.dialect import Renderer
from sdserve.config import Settings
from sdserve.api.dialects import DEFAULT, DIALECTS
from sdserve.errors import BadInput, ModelUnavailable, NotFound, QueueFull, SdserveError

__all__ = ["install_error_handlers", "render_error", "bad_input_from_validation", "dialect_of"]

log = logging.getLogger(__name__)

# Which dialect renders a path's errors; a path no dialect claims is the default's.
_RENDERERS: dict[str, Renderer] = {d.name: d.render_error for d in DIALECTS}
_PREFIXES: tuple[tuple[str, str], ...] = tuple((prefix, d.name) for d in DIALECTS for prefix in d.prefixes)


def dialect_of(path: str) -> str:
    return next((name for prefix, name in _PREFIXES if path.startswith(prefix)), DEFAULT.name)


def render_error(path: str, err: SdserveError, renderers: dict[str, Renderer] | None = None) -> JSONResponse:
    """``err`` in the shape of the dialect owning ``path`` (``renderers``: as an app's settings
    configure them; default: each dialect's plain renderer)."""
    return (renderers or _RENDERERS)[dialect_of(path)](err)


def _field_of(loc: tuple[object, ...]) -> str:
    # ("body", "width") -> "width"; ("body", "image", 3) -> "image[3]"; ("path", "model") -> "model"
    parts = [p for p in loc if p not in ("body", "query", "path", "header", "form")]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and p.startswith(("function-", "list[", "json-or-python")):
            continue  # pydantic union-branch labels, not field names
        else:
            out += f".{p}" if out else str(p)
    return out


def bad_input_from_validation(exc: RequestValidationError) -> BadInput:
    """The first validation error as BadInput naming its field."""
    errs = exc.errors()
    if not errs:
        return BadInput("", "invalid request")
    first = errs[0]
    field = _field_of(tuple(first.get("loc", ())))
    msg = str(first.get("msg", "invalid value"))
    if first.get("type") == "json_invalid":
        return BadInput("body", "is not valid JSON")
    if first.get("type") == "missing":
        return BadInput(field or "body", "is required")
    return BadInput(field or "body", msg)


def install_error_handlers(app: FastAPI, settings: Settings | None = None) -> None:
    renderers = {d.name: d.renderer(settings) for d in DIALECTS}

    @app.exception_handler(SdserveError)
    async def _domain(request: Request, exc: SdserveError) -> JSONResponse:
        if exc.status >= 500 and not isinstance(exc, (QueueFull, ModelUnavailable)):
            log.error("%s %s -> %s", request.method, request.url.path, exc.message)
        return render_error(request.url.path, exc, renderers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return render_error(request.url.path, bad_input_from_validation(exc), renderers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err: SdserveError = NotFound(f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            err = BadInput("method", f"{request.method} is not allowed on {request.url.path}")
            err.status = 405
        else:
            err = BadInput("", str(exc.detail))
            err.status = exc.status_code
        return render_error(request.url.path, err, renderers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render_error(request.url.path, SdserveError("internal server error"), renderers)
