"""ComfyUI's error body: ``{"error": {type, message, details, extra_info}, "node_errors": {}}``.

That is what ComfyUI's ``POST /prompt`` answers for a graph it refuses (``execution.py``);
sdserve answers every error of the ComfyUI routes in it, with ``extra_info.input_name``
naming the field of a bad input. A graph's own errors (``GraphError``) carry their
``node_errors`` and are rendered by ``graph_error_response``.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from sdserve.api.dialect import retry_headers
from sdserve.errors import BadInput, SdserveError

__all__ = ["render_error", "ComfyError", "error_body"]


def error_body(type_: str, message: str, details: str = "", extra_info: dict[str, Any] | None = None,
               node_errors: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "details": details, "extra_info": extra_info or {}},
            "node_errors": node_errors or {}}


def render_error(err: SdserveError) -> JSONResponse:
    extra: dict[str, Any] = {}
    details = err.message
    if isinstance(err, BadInput):
        extra["input_name"] = err.field
        details = f"{err.field}: {err.detail}" if err.field else err.detail
    body = error_body(err.kind, err.message, details, extra)
    return JSONResponse(body, status_code=err.status, headers=retry_headers(err))


class ComfyErrorDetail(BaseModel):
    type: str = Field(description="prompt_outputs_failed_validation, invalid_request, not_found, ...")
    message: str
    details: str
    extra_info: dict[str, Any] = Field(description="input_name: the field at fault (bad input).")


class ComfyError(BaseModel):
    """ComfyUI's error body."""

    model_config = ConfigDict(extra="forbid")

    error: ComfyErrorDetail
    node_errors: dict[str, Any] = Field(description="Per node id: errors, dependent_outputs, class_type.")
