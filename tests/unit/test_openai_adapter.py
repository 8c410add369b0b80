"""OpenAI adapter: wire -> GenerationParams, result -> wire, mask polarity, error bodies, URL cache.

Pure functions over the built-in catalog; no engine, no HTTP.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from sdserve.api.dialects.openai import adapter
from sdserve.api.dialects.openai.adapter import (
    VARIATION_STRENGTH,
    images_response,
    openai_mask,
    parse_size,
    resolve_model,
)
from sdserve.api.dialects.openai.protocol import ImageEditForm, ImageGenerateRequest, ImageVariationForm
from sdserve.api.errors import render_error
from sdserve.errors import (
    BadInput,
    Canceled,
    GenerationFailed,
    InsufficientCredits,
    NotFound,
    QueueFull,
    RateLimited,
    Unauthorized,
    UnknownModel,
)
from sdserve.service.jobs import Output
from sdserve.engine.catalog import Catalog
from sdserve.engine.params import GenerationParams
from sdserve.engine.prepare import settle_inputs
from tests.conftest import png_of

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
INPAINT = "@cf/runwayml/stable-diffusion-v1-5-inpainting"
PX = 4096 * 4096


def _checked(params: GenerationParams, max_pixels: int = 4096 * 4096) -> GenerationParams:
    """The input checks every dialect shares (prepare's first phase), with the engine's field
    names renamed as the router does: what an OpenAI request turns into."""
    try:
        return settle_inputs(Catalog.builtin(), params, max_pixels)[0]
    except BadInput as e:
        raise adapter.in_dialect_terms(e) from None


def generation_params(req, spec):  # type: ignore[no-untyped-def]
    return _checked(adapter.generation_params(req, spec))


def edit_params(form, images, mask, spec, max_pixels):  # type: ignore[no-untyped-def]
    return _checked(adapter.edit_params(form, images, mask, spec, max_pixels), max_pixels)


def variation_params(form, image, spec, max_pixels):  # type: ignore[no-untyped-def]
    return _checked(adapter.variation_params(form, image, spec), max_pixels)


def _rgba_with_hole(size=(64, 64), box=(16, 16, 48, 48), hole_alpha=0) -> bytes:
    """Opaque red with a (semi-)transparent square: OpenAI's 'edit here'."""
    img = Image.new("RGBA", size, (200, 40, 40, 255))
    img.paste((0, 0, 0, hole_alpha), box)
    return png_of(img)


# -- models -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [None, "dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1.5", "gpt-image-2"])
def test_openai_names_and_missing_model_map_to_the_default(catalog, name):
    assert resolve_model(name, catalog, SD15).id == SD15
    assert resolve_model(name, catalog, "sdxl").id == "@cf/stabilityai/stable-diffusion-xl-base-1.0"


def test_catalog_ids_and_aliases_win(catalog):
    assert resolve_model("sdxl-lightning", catalog, SD15).id == "@cf/bytedance/stable-diffusion-xl-lightning"
    assert resolve_model(INPAINT, catalog, SD15).id == INPAINT


def test_unknown_model_names_what_exists(catalog):
    with pytest.raises(UnknownModel) as e:
        resolve_model("midjourney", catalog, SD15)
    assert SD15 in e.value.message


# -- generations ------------------------------------------------------------------------

@pytest.mark.parametrize("size,expected", [("512x512", (512, 512)), ("768X1024", (768, 1024)), (" 64x96 ", (64, 96)),
                                           ("auto", (None, None)), (None, (None, None))])
def test_parse_size(size, expected):
    assert parse_size(size) == expected


@pytest.mark.parametrize("size", ["512", "512x", "big", "513x512", "0x0", "8192x512", "512*512", "-64x64"])
def test_bad_sizes_name_the_size_field(size, catalog):
    with pytest.raises(BadInput) as e:
        generation_params(ImageGenerateRequest(prompt="x", size=size), catalog.get(SD15))
    assert e.value.field == "size"


def test_generation_params_carry_every_field(catalog):
    req = ImageGenerateRequest(prompt="a fox", model="dall-e-3", n=3, size="256x128", quality="hd", style="vivid",
                               user="u1", output_format="webp", negative_prompt="blurry", seed=9, steps=4, guidance=3.5)
    p = generation_params(req, resolve_model(req.model, catalog, SD15))
    assert (p.model, p.task, p.prompt, p.negative_prompt) == (SD15, "txt2img", "a fox", "blurry")
    assert (p.width, p.height, p.n, p.seed, p.steps, p.guidance) == (256, 128, 3, 9, 4, 3.5)
    assert p.output_format == "webp"
    assert p.init_image is None and p.mask_image is None


def test_generation_defaults_are_the_models(catalog):
    p = generation_params(ImageGenerateRequest(prompt="x"), catalog.get(SD15))
    assert (p.width, p.height, p.steps, p.guidance, p.seed, p.n, p.output_format) == (None, None, None, None, None, 1, "png")


@pytest.mark.parametrize("body,field", [({"prompt": ""}, "prompt"), ({"prompt": "x", "n": 0}, "n"),
                                        ({"prompt": "x", "n": 11}, "n"), ({"prompt": "x", "response_format": "file"}, "response_format"),
                                        ({"prompt": "x", "output_format": "gif"}, "output_format"),
                                        ({"prompt": "x", "seed": -1}, "seed"), ({}, "prompt")])
def test_schema_rejects_bad_fields(body, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        ImageGenerateRequest.model_validate(body)
    assert e.value.errors()[0]["loc"][0] == field


def test_form_values_arrive_as_text_and_are_coerced():
    f = ImageEditForm.model_validate({"prompt": "x", "n": "2", "stream": "false", "seed": "7", "size": "",
                                      "guidance": "2.5", "response_format": "b64_json"})
    assert (f.n, f.stream, f.seed, f.size, f.guidance) == (2, False, 7, None, 2.5)


# -- masks and edits --------------------------------------------------------------------

def test_transparent_means_repaint():
    m = openai_mask(Image.open(io.BytesIO(_rgba_with_hole())))
    assert m is not None and m.mode == "L"
    assert m.getpixel((32, 32)) == 255  # transparent -> white (repaint)
    assert m.getpixel((2, 2)) == 0  # opaque -> black (keep)
    assert openai_mask(Image.new("RGBA", (8, 8), (1, 2, 3, 255))) is None


def test_half_transparent_edges_follow_the_midpoint():
    assert openai_mask(Image.open(io.BytesIO(_rgba_with_hole(hole_alpha=127)))).getpixel((32, 32)) == 255
    assert openai_mask(Image.open(io.BytesIO(_rgba_with_hole(hole_alpha=128)))) is None


def test_edit_with_mask_inpaints_and_converts_polarity(catalog):
    image = png_of(Image.new("RGB", (64, 64), (10, 200, 10)))
    p = edit_params(ImageEditForm(prompt="x", n=2), [image], _rgba_with_hole(), catalog.get(SD15), PX)
    assert (p.task, p.strength, p.n, p.width, p.height) == ("inpaint", 1.0, 2, 64, 64)
    assert p.init_image == image
    mask = Image.open(io.BytesIO(p.mask_image))
    assert mask.getpixel((32, 32)) == 255 and mask.getpixel((0, 0)) == 0


def test_edit_without_mask_uses_the_images_transparency(catalog):
    image = _rgba_with_hole(size=(96, 64))
    p = edit_params(ImageEditForm(prompt="x"), [image], None, catalog.get(SD15), PX)
    assert (p.task, p.width, p.height) == ("inpaint", 96, 64)
    assert Image.open(io.BytesIO(p.mask_image)).getpixel((32, 32)) == 255


def test_edit_of_an_opaque_image_without_mask_is_img2img(catalog):
    image = png_of(Image.new("RGB", (100, 70), (10, 200, 10)))
    p = edit_params(ImageEditForm(prompt="x", size="128x64", strength=0.4), [image], None, catalog.get(SD15), PX)
    assert (p.task, p.mask_image, p.strength, p.width, p.height) == ("img2img", None, 0.4, 128, 64)
    q = edit_params(ImageEditForm(prompt="x"), [image], None, catalog.get(SD15), PX)
    assert (q.width, q.height, q.strength) == (96, 64, None)  # input size on the 8-px grid; model's strength


@pytest.mark.parametrize("case,field", [
    ("no_image", "image"), ("two_images", "image"), ("mask_size", "mask"), ("opaque_mask", "mask"),
    ("garbage_image", "image"), ("garbage_mask", "mask"), ("inpaint_model_no_mask", "mask"),
])
def test_bad_edits_name_the_field(catalog, case, field):
    good = png_of(Image.new("RGB", (64, 64)))
    form, images, mask, model = ImageEditForm(prompt="x"), [good], _rgba_with_hole(), SD15
    if case == "no_image":
        images = []
    elif case == "two_images":
        images = [good, good]
    elif case == "mask_size":
        mask = _rgba_with_hole(size=(32, 32), box=(0, 0, 8, 8))
    elif case == "opaque_mask":
        mask = png_of(Image.new("L", (64, 64), 255))
    elif case == "garbage_image":
        images = [b"not an image"]
    elif case == "garbage_mask":
        mask = b"\x89PNG broken"
    elif case == "inpaint_model_no_mask":
        mask, model = None, INPAINT
    with pytest.raises(BadInput) as e:
        edit_params(form, images, mask, catalog.get(model), PX)
    assert e.value.field == field


def test_variation_is_img2img_with_empty_prompt(catalog):
    image = png_of(Image.new("RGB", (64, 64)))
    p = variation_params(ImageVariationForm(n="3"), image, catalog.get(SD15), PX)
    assert (p.task, p.prompt, p.strength, p.n, p.width) == ("img2img", "", VARIATION_STRENGTH, 3, 64)
    with pytest.raises(BadInput) as e:
        variation_params(ImageVariationForm(), None, catalog.get(SD15), PX)
    assert e.value.field == "image"


# -- responses --------------------------------------------------------------------------

def test_images_response_b64_and_url(catalog):
    outs = [Output(index=i, seed=5 + i, content_type="image/png", data=b"\x89PNG-%d" % i) for i in range(2)]
    p = generation_params(ImageGenerateRequest(prompt="x", size="64x64"), catalog.get(SD15))
    body = images_response(outs, "b64_json", 123, lambda o: pytest.fail("no URL for b64_json"), p)
    assert body["created"] == 123 and body["size"] == "64x64"
    assert [base64.b64decode(d["b64_json"]) for d in body["data"]] == [o.data for o in outs]
    assert [d["seed"] for d in body["data"]] == [5, 6]
    body = images_response(outs, None, 1, lambda o: f"http://h/{o.index}", p)  # url is the default
    assert [d["url"] for d in body["data"]] == ["http://h/0", "http://h/1"]
    assert all("b64_json" not in d for d in body["data"])


# -- error bodies (reference §2.7) ------------------------------------------------------

@pytest.mark.parametrize("err,status,kind,code,param", [
    (BadInput("size", "bad"), 400, "invalid_request_error", "invalid_value", "size"),
    (UnknownModel("x"), 404, "invalid_request_error", "model_not_found", "model"),
    (Unauthorized("no key"), 401, "invalid_request_error", "invalid_api_key", None),
    (InsufficientCredits("spent"), 402, "insufficient_quota", "insufficient_quota", None),
    (NotFound("gone"), 404, "invalid_request_error", "not_found", None),
    (RateLimited("slow down", retry_after=7), 429, "requests", "rate_limit_exceeded", None),
    (QueueFull("busy", retry_after=3), 503, "server_error", "server_overloaded", None),
    (GenerationFailed("boom"), 500, "server_error", "server_error", None),
])
def test_error_bodies(err, status, kind, code, param):
    r = render_error("/v1/images/generations", err)
    assert r.status_code == status
    body = json.loads(r.body)
    assert body == {"error": {"message": err.message, "type": kind, "param": param, "code": code}}
    if isinstance(err, (RateLimited, QueueFull)):
        assert r.headers["retry-after"] == str(int(err.retry_after))
    assert render_error("/v1/models/x", err).status_code == status


@pytest.mark.parametrize("err,status,kind", [
    (Unauthorized("no key"), 401, "authentication_error"),
    (InsufficientCredits("spent"), 402, "insufficient_credits"),
    (UnknownModel("x"), 404, "not_found"),
    (NotFound("gone"), 404, "not_found"),
    (RateLimited("slow down", retry_after=7), 429, "rate_limit_error"),
    (GenerationFailed("boom"), 500, "server_error"),
    (QueueFull("busy", retry_after=3), 503, "service_unavailable"),
    (BadInput("size", "bad"), 400, "invalid_request_error"),
])
def test_gateway_error_types(err, status, kind):
    # openai_error_types = "gateway": the aigateway seed's table; same statuses, codes and params.
    from sdserve.api.dialects import DIALECTS
    from sdserve.config import Settings

    gateway = {d.name: d.renderer(Settings(openai_error_types="gateway")) for d in DIALECTS}
    r = render_error("/v1/images/generations", err, gateway)
    assert (r.status_code, json.loads(r.body)["error"]["type"]) == (status, kind)
    openai_body = json.loads(render_error("/v1/images/generations", err).body)["error"]
    assert r.status_code == render_error("/v1/images/generations", err).status_code
    assert {**json.loads(r.body)["error"], "type": openai_body["type"]} == openai_body
    if isinstance(err, (RateLimited, QueueFull)):
        assert r.headers["retry-after"] == str(int(err.retry_after))
    assert json.loads(render_error("/sdapi/v1/txt2img", err, gateway).body) == \
        json.loads(render_error("/sdapi/v1/txt2img", err).body)  # other dialects keep their own


def test_canceled_is_not_retried_by_the_sdk():
    r = render_error("/v1/images/edits", Canceled("canceled"))
    assert r.headers["x-should-retry"] == "false"


def test_engine_errors_are_renamed_to_the_dialects_fields():
    from sdserve.api.dialects.openai.adapter import in_dialect_terms

    renamed = in_dialect_terms(BadInput("width", "70 is not a multiple of 8"))
    assert (renamed.field, renamed.message) == ("size", "size: 70 is not a multiple of 8")
    same = BadInput("steps", "too many")
    assert in_dialect_terms(same) is same


def test_partial_images_are_spread_evenly_before_the_final_image():
    from sdserve.api.dialects.openai.streaming import partial_due

    due = [s for s in range(1, 31) if partial_due(s, 30, 2, sum(1 for t in range(1, s) if partial_due(t, 30, 2, 0)))]
    assert due[0] == 10 and not partial_due(30, 30, 0, 0) and not partial_due(30, 30, 3, 3)
    assert [partial_due(s, 30, 3, 1) for s in (14, 15)] == [False, True]


def test_stream_event_bodies_match_the_openai_sdk_types():
    import openai.types as t

    from sdserve.api.dialects.openai.streaming import image_event

    fields = {"size": "64x64", "output_format": "png", "quality": "auto", "background": "auto"}
    partial = image_event("image_generation", b"\x89PNG", fields=fields, created=1, partial_index=0)
    done = image_event("image_edit", b"\x89PNG", fields=fields, created=1, seed=7)
    assert t.ImageGenPartialImageEvent.model_validate(partial).partial_image_index == 0
    assert t.ImageEditCompletedEvent.model_validate(done).usage.total_tokens == 0
    assert done["seed"] == 7 and done["type"] == "image_edit.completed"
