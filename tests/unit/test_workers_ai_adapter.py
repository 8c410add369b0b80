"""Workers AI wire schema and adapter (wire -> GenerationParams), and its error envelope.

Pure functions over the built-in catalog; no engine, no HTTP. The HTTP behaviour of the
same fields is in tests/integration/test_workers_ai.py.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image
from pydantic import ValidationError

from sdserve.api.dialects.workers_ai import adapter
from sdserve.api.dialects.workers_ai.adapter import TEXT_TO_IMAGE_TASK, search_item
from sdserve.api.dialects.workers_ai.protocol import MAX_STEPS, TextToImageInput
from sdserve.api.errors import render_error
from sdserve.engine.catalog import Catalog
from sdserve.engine.params import GenerationParams
from sdserve.engine.prepare import settle_inputs
from sdserve.errors import (
    BadInput,
    GenerationFailed,
    ModelUnavailable,
    PayloadTooLarge,
    QueueFull,
    RateLimited,
    Unauthorized,
    UnknownModel,
)
from tests.conftest import mask_bytes, png_bytes

CAT = Catalog.builtin()
SD15 = CAT.get("@cf/runwayml/stable-diffusion-v1-5-img2img")
INPAINTING = CAT.get("@cf/runwayml/stable-diffusion-v1-5-inpainting")
SDXL = CAT.get("@cf/stabilityai/stable-diffusion-xl-base-1.0")
PIXELS = 4096 * 4096


def to_params(inp: TextToImageInput, spec, max_pixels: int) -> GenerationParams:  # type: ignore[no-untyped-def]
    """The adapter, then the input checks every dialect shares (prepare's first phase), with
    field names as the router renames them: what a Workers AI request turns into."""
    params = adapter.to_params(inp, spec)
    try:
        return settle_inputs(CAT, params, max_pixels)[0]
    except BadInput as e:
        raise e.renamed(adapter.field_names(inp)) from None


def _inp(**fields) -> TextToImageInput:  # type: ignore[no-untyped-def]
    # Through JSON, as the router receives it: the strictness that matters is JSON's.
    return TextToImageInput.model_validate_json(json.dumps({"prompt": "a lighthouse", **fields}))


def _error_field(**fields) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as e:
        _inp(**fields)
    return ".".join(str(p) for p in e.value.errors()[0]["loc"])


# -- schema: limits as documented (reference §1.3) ---------------------------------------

def test_prompt_is_required_and_non_empty() -> None:
    with pytest.raises(ValidationError):
        TextToImageInput.model_validate_json("{}")
    assert _error_field(prompt="") == "prompt"
    assert _error_field(prompt=5) == "prompt"


@pytest.mark.parametrize("name", ["width", "height"])
@pytest.mark.parametrize(("value", "ok"), [(256, True), (2048, True), (255, False), (2049, False),
                                           (512.0, False), ("512", False), (True, False), (None, True)])
def test_size_limits_256_to_2048(name: str, value: object, ok: bool) -> None:
    if ok:
        assert getattr(_inp(**{name: value}), name) == value
    else:
        assert _error_field(**{name: value}) == name


@pytest.mark.parametrize(("value", "ok"), [(1, True), (MAX_STEPS, True), (0, False), (21, False), (2.5, False)])
def test_num_steps_at_most_20(value: object, ok: bool) -> None:
    assert MAX_STEPS == 20
    if ok:
        assert _inp(num_steps=value).num_steps == value
    else:
        assert _error_field(num_steps=value) == "num_steps"


@pytest.mark.parametrize(("value", "ok"), [(0, True), (1, True), (0.5, True), (-0.1, False), (1.01, False),
                                           ("0.5", False), (True, False)])
def test_strength_between_0_and_1(value: object, ok: bool) -> None:
    if ok:
        assert _inp(strength=value).strength == value
    else:
        assert _error_field(strength=value) == "strength"


@pytest.mark.parametrize("name", ["strength", "guidance"])
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_rejected(name: str, token: str) -> None:
    # Python's json module accepts these tokens; the schema must not.
    with pytest.raises(ValidationError) as e:
        TextToImageInput.model_validate_json(f'{{"prompt": "x", "{name}": {token}}}')
    assert e.value.errors()[0]["loc"] == (name,)


@pytest.mark.parametrize(("value", "ok"), [(0, True), (2**32 - 1, True), (-1, False), (2**32, False),
                                           (1.5, False), ("42", False)])
def test_seed_is_a_32_bit_unsigned_integer(value: object, ok: bool) -> None:
    if ok:
        assert _inp(seed=value).seed == value
    else:
        assert _error_field(seed=value) == "seed"


@pytest.mark.parametrize("name", ["image", "mask"])
def test_byte_arrays_and_their_object_form(name: str) -> None:
    assert getattr(_inp(**{name: [137, 80, 78, 71]}), name) == [137, 80, 78, 71]
    assert getattr(_inp(**{name: {name: [137, 80]}}), name) == [137, 80]
    assert _error_field(**{name: [137, 256]}) == f"{name}.1"
    assert _error_field(**{name: {name: [137, 256]}}) == f"{name}.1"  # object form: the same precise error
    assert _error_field(**{name: [-1]}) == f"{name}.0"
    assert _error_field(**{name: [1.5]}) == f"{name}.0"
    assert _error_field(**{name: []}) == name
    assert _error_field(**{name: "iVBORw0KGgo="}) == name
    assert _error_field(**{name: {"data": [1]}}) == name


def test_unknown_fields_are_ignored() -> None:
    # Clients written for newer schemas may send more; the documented fields still apply.
    assert _inp(num_steps=3, lora="x").num_steps == 3


# -- to_params ---------------------------------------------------------------------------

def test_txt2img_leaves_model_defaults_to_the_engine() -> None:
    p = to_params(_inp(), SDXL, PIXELS)
    assert (p.model, p.task, p.prompt, p.negative_prompt) == (SDXL.id, "txt2img", "a lighthouse", "")
    # Left out: resolved from the model (SDXL 1024², 20 steps, 7.5; Lightning/LCM their own).
    assert (p.width, p.height, p.steps, p.guidance, p.seed, p.strength) == (None, None, None, None, None, None)
    assert p.init_image is None and p.mask_image is None and p.output_format == "png" and p.n == 1


def test_txt2img_passes_every_field() -> None:
    p = to_params(_inp(negative_prompt="fog", width=256, height=512, num_steps=4, guidance=3.5, seed=42), SD15, PIXELS)
    assert (p.negative_prompt, p.width, p.height, p.steps, p.guidance, p.seed) == ("fog", 256, 512, 4, 3.5, 42)


def test_image_as_byte_array_is_img2img_with_strength_default_1() -> None:
    png = png_bytes((96, 64))
    p = to_params(_inp(image=list(png)), SD15, PIXELS)
    assert p.task == "img2img" and p.init_image == png
    assert p.strength == 1.0  # the schema's default
    assert (p.width, p.height) == (96, 64)  # keeps the input's size
    assert to_params(_inp(image=list(png), strength=0.4), SD15, PIXELS).strength == 0.4


def test_img2img_size_rounds_down_to_multiples_of_8_per_missing_dimension() -> None:
    png = png_bytes((101, 70))
    p = to_params(_inp(image=list(png)), SD15, PIXELS)
    assert (p.width, p.height) == (96, 64)
    p = to_params(_inp(image=list(png), width=256), SD15, PIXELS)
    assert (p.width, p.height) == (256, 64)


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
def test_image_b64_bare_and_data_uri(prefix: str) -> None:
    png = png_bytes()
    b64 = base64.b64encode(png).decode()
    p = to_params(_inp(image_b64=prefix + b64), SD15, PIXELS)
    assert p.task == "img2img" and p.init_image == png
    wrapped = "\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))  # as the `base64` tool writes it
    assert to_params(_inp(image_b64=prefix + wrapped), SD15, PIXELS).init_image == png


@pytest.mark.parametrize(("value", "words"), [
    ("!!!not base64!!!", "not valid base64"),
    ("data:image/png,iVBORw0KGgo=", "base64"),
    (base64.b64encode(b"plain text, no image").decode(), "not a decodable image"),
    ("", "empty"),
])
def test_bad_image_b64_names_its_field(value: str, words: str) -> None:
    with pytest.raises(BadInput) as e:
        to_params(_inp(image_b64=value), SD15, PIXELS)
    assert e.value.field == "image_b64" and words in e.value.message


def test_image_and_image_b64_together_is_an_error() -> None:
    png = png_bytes()
    with pytest.raises(BadInput) as e:
        to_params(_inp(image=list(png), image_b64=base64.b64encode(png).decode()), SD15, PIXELS)
    assert e.value.field == "image"


def test_undecodable_image_bytes_name_the_field() -> None:
    with pytest.raises(BadInput) as e:
        to_params(_inp(image=[1, 2, 3, 4]), SD15, PIXELS)
    assert e.value.field == "image"


@pytest.mark.parametrize("form", ["array", "object"])
def test_image_and_mask_are_inpaint(form: str) -> None:
    png, mask = png_bytes(), mask_bytes()
    fields = {"image": list(png), "mask": list(mask)} if form == "array" else \
        {"image": {"image": list(png)}, "mask": {"mask": list(mask)}}
    for spec in (SD15, INPAINTING, SDXL):
        p = to_params(_inp(**fields), spec, PIXELS)
        assert p.task == "inpaint" and p.init_image == png and p.mask_image == mask


def test_mask_must_match_the_image_size() -> None:
    with pytest.raises(BadInput) as e:
        to_params(_inp(image=list(png_bytes((64, 64))), mask=list(mask_bytes((128, 64)))), SD15, PIXELS)
    assert e.value.field == "mask" and "128x64" in e.value.message and "64x64" in e.value.message


def test_mask_without_image_or_undecodable_mask() -> None:
    with pytest.raises(BadInput) as e:
        to_params(_inp(mask=list(mask_bytes())), SD15, PIXELS)
    assert e.value.field == "mask"
    with pytest.raises(BadInput) as e:
        to_params(_inp(image=list(png_bytes()), mask=[7, 7, 7]), SD15, PIXELS)
    assert e.value.field == "mask"


def test_inpainting_model_needs_image_and_mask() -> None:
    with pytest.raises(BadInput) as e:
        to_params(_inp(), INPAINTING, PIXELS)
    assert e.value.field == "image" and "image" in e.value.message and "mask" in e.value.message
    with pytest.raises(BadInput) as e:
        to_params(_inp(image=list(png_bytes())), INPAINTING, PIXELS)
    assert e.value.field == "mask"


def test_oversized_image_is_payload_too_large_before_decoding() -> None:
    with pytest.raises(PayloadTooLarge) as e:
        to_params(_inp(image=list(png_bytes((128, 128)))), SD15, 64 * 64)
    assert e.value.field == "image" and e.value.status == 413


# -- model search item -------------------------------------------------------------------

def test_search_item_is_shaped_like_the_catalog_entry() -> None:
    item = search_item(SDXL).model_dump()
    assert item["id"] == "6d52253a-b731-4a03-b203-cde2d4fae871"
    assert item["name"] == SDXL.id and item["source"] == 1
    assert item["task"] == TEXT_TO_IMAGE_TASK and item["task"]["name"] == "Text-to-Image"
    assert {"property_id": "beta", "value": "true"} in item["properties"]
    assert set(item) >= {"id", "source", "name", "description", "task", "created_at", "tags", "properties"}


# -- error envelope (reference §1.6) -----------------------------------------------------

@pytest.mark.parametrize(("err", "status", "code"), [
    (BadInput("width", "must be a multiple of 8"), 400, 5006),
    (PayloadTooLarge("body", "request is too large"), 413, 3006),
    (UnknownModel("@cf/nope or task"), 400, 5007),
    (ModelUnavailable("Model x is not available: run `sdserve pull x`"), 503, 5007),
    (Unauthorized("Authentication error"), 401, 10000),
    (RateLimited("slow down", retry_after=3), 429, 3036),
    (QueueFull("queue is full", retry_after=5), 429, 3040),
    (GenerationFailed("boom"), 500, 3000),
])
def test_every_error_is_the_cloudflare_envelope(err, status: int, code: int) -> None:  # type: ignore[no-untyped-def]
    resp = render_error("/client/v4/accounts/x/ai/run/@cf/m", err)
    assert resp.status_code == status
    body = json.loads(resp.body)
    assert list(body) == ["success", "errors", "messages", "result"]
    assert body["success"] is False and body["messages"] == [] and body["result"] == {}
    assert body["errors"] == [{"code": code, "message": body["errors"][0]["message"]}]
    assert render_error("/ai/run/@cf/m", err).body == resp.body  # both route forms
    if isinstance(err, (RateLimited, QueueFull)):
        assert int(resp.headers["retry-after"]) >= 1


def test_bad_input_message_follows_the_validator_pattern_and_names_the_field() -> None:
    body = json.loads(render_error("/ai/run/m", BadInput("num_steps", "must be at most 20")).body)
    assert body["errors"][0]["message"] == "AiError: Bad input: Error: num_steps: must be at most 20"
    body = json.loads(render_error("/ai/run/m", UnknownModel("@cf/nope or task")).body)
    assert body["errors"][0]["message"] == "No such model @cf/nope or task"
