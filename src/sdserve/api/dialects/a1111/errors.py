"""A1111's error body: its api_middleware shape (reference §4.5)."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from sdserve.api.dialect import retry_headers
from sdserve.errors import ModelUnavailable, QueueFull, SdserveError

__all__ = ["render_error", "A1111Error"]


def render_error(err: SdserveError) -> JSONResponse:
    # The exception class, its detail, and "<status>: <detail>". Deliberate errors are
    # HTTPExceptions there; server faults keep their class.
    name = "HTTPException" if err.status < 500 or isinstance(err, (QueueFull, ModelUnavailable)) else type(err).__name__
    body = {"error": name, "detail": err.message, "body": "", "errors": f"{err.status}: {err.message}"}
    return JSONResponse(body, status_code=err.status, headers=retry_headers(err))


class A1111Error(BaseModel):
    """A1111's api_middleware shape."""

    model_config = ConfigDict(extra="forbid")

    error: str
    detail: str
    body: str
    errors: str = Field(description='"<status>: <detail>"')
