"""Schemathesis against sdserve's own OpenAPI document, every operation of every dialect, on
a live loopback server over the real engine (tiny models).

Each dialect is fuzzed with schema-valid (positive) and schema-violating (negative) requests;
every response must be no 5xx, a status the document lists for that operation, the content
type it lists, and a body that validates against the listed schema (the dialect's own error
body for errors). Generation cost is capped (see ``_bounded``) so a request whose parameters
are valid runs in well under a second on a CPU.

CI runs a fixed, derandomized set (``SDSERVE_FUZZ_EXAMPLES`` per operation and mode, 12 by
default). A longer, random exploration: ``SDSERVE_FUZZ_EXAMPLES=200 SDSERVE_FUZZ_RANDOM=1
.venv/bin/python -m pytest -q tests/reliability/test_fuzz.py`` (docs/RELIABILITY.md).
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sdserve.api.errors import dialect_of
from tests.conftest import make_app
from tests.integration.live_server import live_server

EXAMPLES = int(os.environ.get("SDSERVE_FUZZ_EXAMPLES", "12"))
RANDOM = os.environ.get("SDSERVE_FUZZ_RANDOM") == "1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
DIALECTS = ["workers_ai", "openai", "a1111", "modelslab", "comfyui", "native"]
# Real model names the fuzzer sometimes puts where a model goes, so valid requests reach the engine.
MODELS = ["@cf/runwayml/stable-diffusion-v1-5-img2img", "sd15", "@cf/bytedance/stable-diffusion-xl-lightning",
          "@cf/runwayml/stable-diffusion-v1-5-inpainting", "dall-e-3"]
_MODEL_FIELDS = ("model", "model_id")
# Cost caps: a valid value above the cap becomes the cap (sides keep their remainder mod 8, so
# "not on the latent grid" stays so); invalid values are left alone, so negative cases stay negative.
_CAPS = {"width": 256, "height": 256, "num_steps": 2, "steps": 2, "num_inference_steps": 2,
         "n": 2, "samples": 2, "batch_size": 2, "n_iter": 2}
_LIMITS = {"width": (64, 4096), "height": (64, 4096), "num_steps": (1, 200), "steps": (1, 200),
           "num_inference_steps": (1, 51), "n": (1, 16), "samples": (1, 4), "batch_size": (1, 16), "n_iter": (1, 100)}
# Defaults that would otherwise run 20-50 steps at 512 px.
_CHEAP_DEFAULTS = {"/sdapi/v1/": {"steps": 2, "width": 64, "height": 64}, "/v1/images/": {"steps": 2},
                   "/v1/jobs": {"steps": 2}, "/ai/run/": {"num_steps": 2}, "/client/v4/": {"num_steps": 2},
                   "/api/v": {"num_inference_steps": "2"}}
_NUMBER_TEXT = re.compile(r"\s*\d+(\.0*)?\s*")


def _cap(key: str, v: Any) -> Any:
    cap = _CAPS[key]
    lo, hi = _LIMITS[key]
    as_text = isinstance(v, str) and _NUMBER_TEXT.fullmatch(v)
    if isinstance(v, bool) or not (isinstance(v, (int, float)) or as_text):
        return v
    x = float(v)
    if not (x.is_integer() and cap < x <= hi) or x < lo:
        return v
    new = cap + int(x) % 8 if key in ("width", "height") else cap
    return str(new) if as_text else type(v)(new)


def _bounded(case: schemathesis.Case, model: str | None) -> None:
    """Make ``case`` cheap to run and, sometimes, name a real model."""
    if model is not None and "model" in (case.path_parameters or {}):
        case.path_parameters["model"] = model
    body = case.body
    if not isinstance(body, dict):
        return
    for prefix, defaults in _CHEAP_DEFAULTS.items():
        if case.path.startswith(prefix):
            for k, v in defaults.items():
                body.setdefault(k, v)
    for key in _CAPS:
        if key in body:
            body[key] = _cap(key, body[key])
    if model is not None:
        for key in _MODEL_FIELDS:
            if key in body:
                body[key] = model


@pytest.fixture(scope="module")
def served(settings, engine) -> Iterator[tuple[str, Any]]:
    """A live server (ModelsLab answers 'processing' at once, so its fetch path is fuzzed too)
    and its OpenAPI document loaded by schemathesis."""
    app = make_app(settings, engine, modelslab_wait_s=0.0, max_body_mb=2.0)
    with live_server(app) as url:
        yield url, schemathesis.openapi.from_dict(app.openapi())


def _fuzz(url: str, op: Any, mode: GenerationMode, failures: list[str], statuses: Counter[int]) -> None:
    @given(case=op.as_strategy(mode), model=st.sampled_from([None, None, *MODELS]))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not RANDOM,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case, model: str | None) -> None:
        _bounded(case, model)
        try:
            response = case.call(base_url=url, timeout=120)
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS)
        except AssertionError as e:  # schemathesis' FailureGroup: keep going, report all at the end
            failures.append(f"{op.label} ({mode.value}):\n{str(e)[:3000]}")

    try:
        run()
    except Unsatisfiable:
        pass  # nothing to make invalid (no parameters, no body): nothing to test in negative mode


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_operation_conforms_and_never_answers_5xx(served, dialect: str, mode: GenerationMode) -> None:
    url, schema = served
    ops = [r.ok() for r in schema.get_all_operations()]
    mine = [op for op in ops if dialect_of(op.path) == dialect]  # native: also /healthz, /readyz, /metrics
    assert mine, f"no operations for {dialect}"
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    t0 = time.monotonic()
    for op in mine:
        _fuzz(url, op, mode, failures, statuses)
    assert not failures, "\n\n".join(failures)
    # And the server still serves after everything it was sent.
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    print(f"{dialect}/{mode.value}: {len(mine)} operations, {sum(statuses.values())} requests in "
          f"{time.monotonic() - t0:.1f}s; statuses {dict(sorted(statuses.items()))}")
