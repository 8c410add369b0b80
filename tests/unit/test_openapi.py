"""The OpenAPI error models describe exactly what the renderers send, for every error class
in every dialect (schemathesis then holds the routes to them)."""

from __future__ import annotations

import json

import pytest

from sdserve.api.errors import render_error
from sdserve.api.openapi import ERROR_MODELS
from sdserve.errors import (
    BadInput,
    Canceled,
    GenerationFailed,
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

PATHS = {"workers_ai": "/ai/run/x", "native": "/v1/jobs", "openai": "/v1/images/generations",
         "a1111": "/sdapi/v1/txt2img", "modelslab": "/api/v3/text2img", "comfyui": "/prompt"}
ERRORS: list[SdserveError] = [
    BadInput("width", "is wrong"), BadInput("", "bad body"), PayloadTooLarge("body", "too big"),
    UnknownModel("m", ["a"]), Unauthorized("no key"), NotFound("no job"), RateLimited("slow down", 3.2),
    InsufficientCredits("spent"), QueueFull("full", 4), ModelUnavailable("pull it"), Canceled("canceled"),
    GenerationFailed("boom"), SdserveError("internal server error"),
]


@pytest.mark.parametrize("dialect", sorted(PATHS))
@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_every_rendered_error_matches_its_dialect_model(dialect: str, err: SdserveError) -> None:
    resp = render_error(PATHS[dialect], err)
    ERROR_MODELS[dialect].model_validate(json.loads(bytes(resp.body)))
    assert resp.status_code >= 400
