"""ModelsLab's error body (reference §3.3): ``{"status": "error", "message": ...}``."""

from __future__ import annotations

from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from sdserve.api.dialect import retry_headers
from sdserve.errors import SdserveError, Unauthorized

__all__ = ["render_error", "ModelsLabError"]


def render_error(err: SdserveError) -> JSONResponse:
    # With the error's own 4xx/5xx (upstream's legacy 200-for-errors is UNCONFIRMED; its
    # current docs use real codes, and modelslab_py raises on any non-200 with the body in
    # the message).
    body: dict[str, object] = {"status": "error", "message": err.message}
    if isinstance(err, Unauthorized):
        body["tip"] = 'Send your API key as "key" in the JSON body (Content-Type: application/json).'
    retry = getattr(err, "retry_after", None)
    if retry is not None:
        body["retry_after"] = max(1, int(round(retry)))
    return JSONResponse(body, status_code=err.status, headers=retry_headers(err))


class ModelsLabError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["error"]
    message: str
    tip: str | None = None
    retry_after: int | None = None
