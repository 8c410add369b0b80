"""OpenAI's error body (reference §2.7): the SDK reads ``e.type`` / ``e.code`` / ``e.param``."""

from __future__ import annotations

import functools
from collections.abc import Callable

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from sdserve.api.dialect import retry_headers
from sdserve.config import Settings
from sdserve.errors import (
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

__all__ = ["render_error", "renderer_for", "OpenAIError"]

# (type, code) per error.
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


# The ``type`` names of OpenAI-compatible gateways (aigateway.sh's error table), for
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


def renderer_for(settings: Settings) -> Callable[[SdserveError], JSONResponse]:
    """``render_error`` in the vocabulary ``settings.openai_error_types`` picks."""
    return functools.partial(render_error, types=settings.openai_error_types)


def render_error(err: SdserveError, types: str = "openai") -> JSONResponse:
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
    headers = retry_headers(err)
    if isinstance(err, Canceled):
        headers["x-should-retry"] = "false"  # the SDK would retry a 409; a canceled job must stay canceled
    body = {"error": {"message": err.message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: OpenAIErrorDetail
