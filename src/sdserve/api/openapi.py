"""The OpenAPI document: each dialect's error bodies and statuses, filled in by path prefix.

Routes declare their request and success shapes themselves; what they may answer on error
is the same for every route of a dialect (the renderers in ``errors.py`` pick the body by
path prefix), so it is added here in one pass instead of on each route. FastAPI's generic
422 ``HTTPValidationError`` is replaced: validation failures are answered as 400 in the
dialect's own shape. Each dialect record names the model of what its renderer sends; a test
renders every error class through every dialect and validates it against them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from sdserve.api.dialects import DIALECTS
from sdserve.api.errors import dialect_of

__all__ = ["install_openapi", "ERROR_MODELS"]


# Each dialect's error-body model, by dialect name.
ERROR_MODELS: dict[str, type[BaseModel]] = {d.name: d.error_model for d in DIALECTS}

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
