"""The native API's error body: ``{"error": {"type", "message", "field"}}``."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from sdserve.api.dialect import retry_headers
from sdserve.errors import BadInput, SdserveError

__all__ = ["render_error", "NativeError"]


def render_error(err: SdserveError) -> JSONResponse:
    error: dict[str, object] = {"type": err.kind, "message": err.message}
    if isinstance(err, BadInput):
        error["field"] = err.field
    body = {"error": error}
    return JSONResponse(body, status_code=err.status, headers=retry_headers(err))


class NativeErrorDetail(BaseModel):
    type: str = Field(description="invalid_request, not_found, authentication_error, rate_limit_exceeded, ...")
    message: str
    field: str | None = Field(None, description="The request field at fault (bad input only).")


class NativeError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: NativeErrorDetail
