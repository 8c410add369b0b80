"""Domain error -> each dialect's error body, in one place.

Routes raise ``sdserve.errors`` exceptions; the handlers installed here render them in the
shape of the dialect that owns the request path. Request validation failures (pydantic)
become BadInput naming the offending field, so they take the same path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    BadInput,
    Canceled,
    InsufficientCredits,
    ModelUnavailable,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    RateLimited,
    SdserveError,
    Unauthorized,
    UnknownModel,
)

__all__ = ["install_error_handlers", "render_error", "bad_input_from_validation", "dialect_of"]

log = logging.getLogger(__name__)

Renderer = Callable[[SdserveError], JSONResponse]

# Workers AI internal codes (reference §1.6); 5006 is the validator's "Bad input".
_CF_CODES: list[tuple[type[SdserveError], int]] = [
    (PayloadTooLarge, 3006),
    (BadInput, 5006),
    (UnknownModel, 5007),
    (ModelUnavailable, 5007),
    (Unauthorized, 10000),
    (RateLimited, 3036),
    (QueueFull, 3040),
    (InsufficientCredits, 3036),
    (NotFound, 3042),
    (Canceled, 3008),
]


def _headers(err: SdserveError) -> dict[str, str]:
    retry = getattr(err, "retry_after", None)
    return {"Retry-After": str(max(1, int(round(retry))))} if retry is not None else {}


def _render_workers_ai(err: SdserveError) -> JSONResponse:
    code = next((c for cls, c in _CF_CODES if isinstance(err, cls)), 3000)
    status = err.status
    if isinstance(err, QueueFull):
        status = 429  # Cloudflare reports capacity as 3040 / 429 "Out of capacity"
    if isinstance(err, BadInput) and not isinstance(err, PayloadTooLarge):
        message = f"AiError: Bad input: Error: {err.message}"
    else:
        message = err.message
    body = {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": {}}
    return JSONResponse(body, status_code=status, headers=_headers(err))


def _render_native(err: SdserveError) -> JSONResponse:
    error: dict[str, object] = {"type": err.kind, "message": err.message}
    if isinstance(err, BadInput):
        error["field"] = err.field
    body = {"error": error}
    return JSONResponse(body, status_code=err.status, headers=_headers(err))


# OpenAI (reference §2.7): (type, code) per error; the SDK reads e.type / e.code / e.param.
_OPENAI_CODES: list[tuple[type[SdserveError], str, str]] = [
    (PayloadTooLarge, "invalid_request_error", "request_too_large"),
    (BadInput, "invalid_request_error", "invalid_value"),
    (UnknownModel, "invalid_request_error", "model_not_found"),
    (Unauthorized, "invalid_request_error", "invalid_api_key"),
    (NotFound, "invalid_request_error", "not_found"),
    (RateLimited, "requests", "rate_limit_exceeded"),
    (InsufficientCredits, "insufficient_quota", "insufficient_quota"),
    (QueueFull, "server_error", "server_overloaded"),
    (ModelUnavailable, "server_error", "model_unavailable"),
    (Canceled, "invalid_request_error", "canceled"),
]


# The `type` names of OpenAI-compatible gateways (aigateway.sh's error table), for
# openai_error_types = "gateway"; codes and statuses stay those above.
_GATEWAY_TYPES: list[tuple[type[SdserveError], str]] = [
    (BadInput, "invalid_request_error"),  # PayloadTooLarge too
    (UnknownModel, "not_found"),
    (NotFound, "not_found"),
    (Unauthorized, "authentication_error"),
    (RateLimited, "rate_limit_error"),
    (InsufficientCredits, "insufficient_credits"),
    (QueueFull, "service_unavailable"),
    (ModelUnavailable, "service_unavailable"),
    (Canceled, "invalid_request_error"),
]


def _render_openai(err: SdserveError, types: str = "openai") -> JSONResponse:
    kind, code = next(((t, c) for cls, t, c in _OPENAI_CODES if isinstance(err, cls)), ("server_error", "server_error"))
    if types == "gateway":
        kind = next((t for cls, t in _GATEWAY_TYPES if isinstance(err, cls)), "server_error")
    param = None
    if isinstance(err, BadInput):
        param = err.field or None
    elif isinstance(err, UnknownModel):
        param = "model"
    # An unknown model is 404 model_not_found on OpenAI, whatever the route.
    status = 404 if isinstance(err, UnknownModel) else err.status
    headers = _headers(err)
    if isinstance(err, Canceled):
        headers["x-should-retry"] = "false"  # the SDK would retry a 409; a canceled job must stay canceled
    body = {"error": {"message": err.message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _render_a1111(err: SdserveError) -> JSONResponse:
    # A1111's api_middleware shape (reference §4.5): the exception class, its detail, and
    # "<status>: <detail>". Deliberate errors are HTTPExceptions there; server faults keep their class.
    name = "HTTPException" if err.status < 500 or isinstance(err, (QueueFull, ModelUnavailable)) else type(err).__name__
    body = {"error": name, "detail": err.message, "body": "", "errors": f"{err.status}: {err.message}"}
    return JSONResponse(body, status_code=err.status, headers=_headers(err))


def _render_modelslab(err: SdserveError) -> JSONResponse:
    # ModelsLab (reference §3.3): {"status": "error", "message": ...} with the error's own 4xx/5xx
    # (upstream's legacy 200-for-errors is UNCONFIRMED; its current docs use real codes, and
    # modelslab_py raises on any non-200 with the body in the message).
    body: dict[str, object] = {"status": "error", "message": err.message}
    if isinstance(err, Unauthorized):
        body["tip"] = 'Send your API key as "key" in the JSON body (Content-Type: application/json).'
    retry = getattr(err, "retry_after", None)
    if retry is not None:
        body["retry_after"] = max(1, int(round(retry)))
    return JSONResponse(body, status_code=err.status, headers=_headers(err))


_RENDERERS: dict[str, Renderer] = {"workers_ai": _render_workers_ai, "native": _render_native,
                                   "openai": _render_openai, "a1111": _render_a1111, "modelslab": _render_modelslab}
# Which dialect owns a path; anything else is the native API's.
_PREFIXES: tuple[tuple[str, str], ...] = (("/ai/", "workers_ai"), ("/client/v4/", "workers_ai"),
                                          ("/v1/images", "openai"), ("/v1/models", "openai"), ("/sdapi/", "a1111"),
                                          ("/api/v3/", "modelslab"), ("/api/v6/", "modelslab"))


def dialect_of(path: str) -> str:
    return next((name for prefix, name in _PREFIXES if path.startswith(prefix)), "native")


def render_error(path: str, err: SdserveError, openai_types: str = "openai") -> JSONResponse:
    """``err`` in the body of the dialect owning ``path``; ``openai_types`` is the
    ``openai_error_types`` setting (which `type` names the OpenAI dialect uses)."""
    dialect = dialect_of(path)
    if dialect == "openai":
        return _render_openai(err, openai_types)
    return _RENDERERS[dialect](err)


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


def install_error_handlers(app: FastAPI, openai_types: str = "openai") -> None:
    @app.exception_handler(SdserveError)
    async def _domain(request: Request, exc: SdserveError) -> JSONResponse:
        if exc.status >= 500 and not isinstance(exc, (QueueFull, ModelUnavailable)):
            log.error("%s %s -> %s", request.method, request.url.path, exc.message)
        return render_error(request.url.path, exc, openai_types)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return render_error(request.url.path, bad_input_from_validation(exc), openai_types)

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
        return render_error(request.url.path, err, openai_types)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render_error(request.url.path, SdserveError("internal server error"), openai_types)
