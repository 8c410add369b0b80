"""Reading an error response in its dialect's own shape (the models the OpenAPI document
publishes), and asserting that it names the field at fault."""

from __future__ import annotations

from typing import Any

from sdserve.api.errors import dialect_of
from sdserve.api.openapi import ERROR_MODELS


def error_of(path: str, response: Any) -> tuple[str | None, str]:
    """(field, message) of an error response, after checking it has its dialect's shape."""
    dialect = dialect_of(path)
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = ERROR_MODELS[dialect].model_validate(response.json())
    if dialect == "workers_ai":
        return None, body.errors[0].message  # type: ignore[attr-defined]
    if dialect == "native":
        return body.error.field, body.error.message  # type: ignore[attr-defined]
    if dialect == "openai":
        return body.error.param, body.error.message  # type: ignore[attr-defined]
    if dialect == "a1111":
        return None, body.detail  # type: ignore[attr-defined]
    if dialect == "comfyui":
        return body.error.extra_info.get("input_name"), body.error.message  # type: ignore[attr-defined]
    return None, body.message  # type: ignore[attr-defined]


def assert_names_field(path: str, response: Any, field: str, status: int | tuple[int, ...] = 400) -> str:
    """A 4xx (``status``) in the dialect's shape whose field (or message) names ``field``;
    returns the message."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (path, field, response.status_code, response.text)
    named, message = error_of(path, response)
    assert named == field or field in message, (path, field, named, message)
    return message
