"""The OpenAPI document: each dialect's error bodies and statuses, filled in by path prefix.

Routes declare their request and success shapes themselves; what they may answer on error
is the same for every route of a dialect (the renderers in ``errors.py`` pick the body by
path prefix), so it is added here in one pass instead of on each route. FastAPI's generic
422 ``HTTPValidationError`` is replaced: validation failures are answered as 400 in the
dialect's own shape. The models below describe exactly what ``errors.py`` renders; a test
renders every error class through every dialect and validates it against them.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from .errors import dialect_of

__all__ = ["install_openapi", "ERROR_MODELS", "JOB_ERRORS", "PUBLIC", "BINARY"]


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


class NativeErrorDetail(BaseModel):
    type: str = Field(description="invalid_request, not_found, authentication_error, rate_limit_exceeded, ...")
    message: str
    field: str | None = Field(None, description="The request field at fault (bad input only).")


class NativeError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: NativeErrorDetail


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: OpenAIErrorDetail


class A1111Error(BaseModel):
    """A1111's api_middleware shape."""

    model_config = ConfigDict(extra="forbid")

    error: str
    detail: str
    body: str
    errors: str = Field(description='"<status>: <detail>"')


class ModelsLabError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["error"]
    message: str
    tip: str | None = None
    retry_after: int | None = None


ERROR_MODELS: dict[str, type[BaseModel]] = {"workers_ai": WorkersAIError, "native": NativeError,
                                            "openai": OpenAIError, "a1111": A1111Error, "modelslab": ModelsLabError}

# Statuses a route that queues a job may answer besides the common ones; routes pass this
# as ``responses=`` and the shape is filled in here.
JOB_ERRORS: dict[int | str, dict[str, Any]] = {
    402: {"description": "The key's image credits are spent."},
    409: {"description": "The job was canceled before it finished."},
    500: {"description": "The engine failed on valid input (the server's fault)."},
    503: {"description": "The queue is full or the model's weights are missing (Retry-After)."},
}
# A route marked with this answers without an API key (health, capability links); it gets
# no 401/429 entries.
PUBLIC: dict[str, Any] = {"x-sdserve-public": True}
# The schema of a raw image body.
BINARY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}

_COMMON = {
    "400": "Bad input: the message (and `field`/`param` where the dialect has one) names the field.",
    "401": "No API key, or a wrong one.",
    "404": "Nothing by that name here (another key's job answers the same as a missing one).",
    "413": "The body, or an image in it, is over the size limit.",
    "429": "The key's rate limit (Retry-After says when to try again).",
}
_VALIDATION = "#/components/schemas/HTTPValidationError"


def _statuses(op: dict[str, Any], path: str) -> list[str]:
    public = op.get("x-sdserve-public", False)
    has_input = bool(op.get("parameters")) or "requestBody" in op
    out = []
    if has_input:
        out.append("400")
    if not public:
        out += ["401", "429"]
    if "{" in path:
        out.append("404")
    if "requestBody" in op:
        out.append("413")
    return out


def _describe_errors(schema: dict[str, Any]) -> None:
    refs = {name: f"#/components/schemas/{model.__name__}" for name, model in ERROR_MODELS.items()}
    for path, ops in schema.get("paths", {}).items():
        ref = refs[dialect_of(path)]
        for op in ops.values():
            responses = op.setdefault("responses", {})
            generic = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if generic.get("$ref") == _VALIDATION:
                del responses["422"]  # validation failures are 400s in the dialect's shape
            for status in _statuses(op, path):
                responses.setdefault(status, {"description": _COMMON[status]})
            for status, resp in responses.items():
                if status[0] in "45" and "content" not in resp:  # a route's own error body stays
                    resp["content"] = {"application/json": {"schema": {"$ref": ref}}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for model in ERROR_MODELS.values():
        components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for sub, sub_schema in components[model.__name__].pop("$defs", {}).items():
            components[sub] = sub_schema


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe each dialect's error responses."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _describe_errors(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
