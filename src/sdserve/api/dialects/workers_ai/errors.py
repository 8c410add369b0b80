"""Workers AI's error body: Cloudflare's v4 envelope with ``success: false`` (reference §1.6)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from sdserve.api.dialect import retry_headers
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

__all__ = ["render_error", "WorkersAIError"]

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


def render_error(err: SdserveError) -> JSONResponse:
    code = next((c for cls, c in _CF_CODES if isinstance(err, cls)), 3000)
    status = err.status
    if isinstance(err, QueueFull):
        status = 429  # Cloudflare reports capacity as 3040 / 429 "Out of capacity"
    if isinstance(err, BadInput) and not isinstance(err, PayloadTooLarge):
        message = f"AiError: Bad input: Error: {err.message}"
    else:
        message = err.message
    body = {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": {}}
    return JSONResponse(body, status_code=status, headers=retry_headers(err))


class WorkersAIErrorItem(BaseModel):
    code: int = Field(description="5006 bad input, 5007 unknown model, 3006 too large, 10000 auth, ...")
    message: str


class WorkersAIError(BaseModel):
    """Cloudflare's v4 envelope with ``success: false``."""

    model_config = ConfigDict(extra="forbid")

    success: Literal[False]
    errors: list[WorkersAIErrorItem] = Field(min_length=1)
    messages: list[Any]
    result: dict[str, Any]
