"""ModelsLab adapter and wire schema: strings as numbers, yes/no flags, limits naming their
field, the safety checker and prompt enhancer fields, scheduler names, images, meta and reply shapes."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from sdserve.api.dialects.modelslab.adapter import (
    Extras,
    estimate_run_s,
    eta_s,
    failed_body,
    fetch_processing_body,
    image_source,
    in_dialect_terms,
    meta,
    processing_body,
    resolve_model,
    resolve_scheduler,
    success_body,
    system_load_body,
)
from sdserve.api.dialects.modelslab import adapter
from sdserve.api.dialects.modelslab.protocol import GenerateRequest
from sdserve.engine.catalog import Catalog
from sdserve.engine.params import GenerationParams
from sdserve.engine.prepare import settle_inputs
from sdserve.errors import BadInput
from tests.conftest import mask_bytes, png_bytes

CATALOG = Catalog.builtin()


def to_params(req, task, spec, init, mask, max_pixels) -> GenerationParams:  # type: ignore[no-untyped-def]
    """The adapter, then the input checks every dialect shares (prepare's first phase), with
    field names renamed as the router does: what a ModelsLab request turns into."""
    try:
        return settle_inputs(CATALOG, adapter.to_params(req, task, spec, init, mask), max_pixels)[0]
    except BadInput as e:
        raise in_dialect_terms(e) from None
SD15 = CATALOG.get("sd15")
INPAINT_ONLY = CATALOG.get("@cf/runwayml/stable-diffusion-v1-5-inpainting")
PX = 4096 * 4096


def req(**kw) -> GenerateRequest:  # type: ignore[no-untyped-def]
    return GenerateRequest.model_validate({"prompt": "a red fox", **kw})


def field_of(exc: ValidationError) -> str:
    return ".".join(str(p) for p in exc.errors()[0]["loc"])


def test_numbers_as_strings_and_flags_in_every_spelling() -> None:
    r = req(width="512", height=768, samples="2", num_inference_steps="31", guidance_scale="7.5", strength=0.7,
            seed="42", base64="yes", enhance_prompt=False, instant_response="true", safety_checker=None,
            track_id=17)
    assert (r.width, r.height, r.samples, r.num_inference_steps) == (512, 768, 2, 31)
    assert (r.guidance_scale, r.strength, r.seed) == (7.5, 0.7, 42)
    assert (r.base64, r.enhance_prompt, r.instant_response, r.safety_checker) == (True, False, True, None)
    assert r.track_id == "17"
    # "" and null both mean "not given"; "512.0" is still a whole number.
    r = req(seed="", width="512.0", panorama="no", upscale="")
    assert (r.seed, r.width, r.panorama, r.upscale) == (None, 512, False, None)


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"width": "abc"}, "width", "is not a number"),
    ({"samples": "two"}, "samples", "is not a number"),
    ({"seed": "1.5"}, "seed", "whole number"),
    ({"samples": 5}, "samples", "less than or equal to 4"),
    ({"samples": "0"}, "samples", "greater than or equal to 1"),
    ({"width": 2000}, "width", "less than or equal to 1024"),
    ({"height": "1032"}, "height", "less than or equal to 1024"),
    ({"guidance_scale": 25}, "guidance_scale", "less than or equal to 20"),
    ({"guidance_scale": "0.5"}, "guidance_scale", "greater than or equal to 1"),
    ({"strength": 1.5}, "strength", "less than or equal to 1"),
    ({"seed": -1}, "seed", "greater than or equal to 0"),
    ({"base64": "maybe"}, "base64", '"yes" or "no"'),
    ({"enhance_prompt": 2}, "enhance_prompt", '"yes" or "no"'),
    ({"samples": True}, "samples", "must be a number"),
    ({"prompt": ""}, "prompt", "at least 1 character"),
])
def test_bad_fields_are_named(body, field, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as e:
        req(**body)
    assert field_of(e.value) == field
    assert words in e.value.errors()[0]["msg"]


def test_enhance_prompt_and_safety_checker_map_to_the_engine_fields() -> None:
    # Upstream's default "yes": the server's enhancer if it has one (engine.auxiliary).
    for flag, mode in ((None, "auto"), ("yes", "auto"), ("no", "off")):
        p = to_params(req(enhance_prompt=flag), "txt2img", SD15, None, None, PX)
        assert (p.enhance_prompt, p.prompt) == (mode, "a red fox")
    p = to_params(req(safety_checker="yes", safety_checker_type="blur"), "txt2img", SD15, None, None, PX)
    assert (p.safety_check, p.safety_mode) == (True, "blur")
    p = to_params(req(), "txt2img", SD15, None, None, PX)
    assert (p.safety_check, p.safety_mode) == (False, "black")
    with pytest.raises(ValidationError):
        req(safety_checker_type="sepia")


def test_to_params_txt2img() -> None:
    p = to_params(req(width="64", height="128", samples="3", num_inference_steps=2, guidance_scale="6", seed=9,
                      negative_prompt="blurry", scheduler="EulerDiscreteScheduler"), "txt2img", SD15, None, None, PX)
    assert (p.task, p.width, p.height, p.n, p.steps, p.guidance, p.seed) == ("txt2img", 64, 128, 3, 2, 6.0, 9)
    assert (p.negative_prompt, p.scheduler, p.strength, p.model) == ("blurry", "euler", None, SD15.id)
    # Left out: the model's defaults (filled by the engine) and a random seed.
    p = to_params(req(), "txt2img", SD15, None, None, PX)
    assert (p.width, p.steps, p.guidance, p.seed, p.n) == (None, None, None, None, 1)


def test_to_params_img2img_and_inpaint() -> None:
    img = png_bytes((96, 72))
    p = to_params(req(prompt_strength=0.6), "img2img", SD15, img, None, PX)
    # Size from the image, rounded down to the latent grid; older docs' prompt_strength works.
    assert (p.width, p.height, p.strength, p.init_image, p.mask_image) == (96, 72, 0.6, img, None)
    p = to_params(req(strength="0.5"), "inpaint", SD15, png_bytes(), mask_bytes(), PX)
    assert (p.task, p.strength, p.mask_image) == ("inpaint", 0.5, mask_bytes())


@pytest.mark.parametrize(("task", "body", "init", "mask", "field"), [
    ("img2img", {}, None, None, "init_image"),
    ("inpaint", {}, png_bytes(), None, "mask_image"),
    ("img2img", {}, b"not an image", None, "init_image"),
    ("inpaint", {}, png_bytes((64, 64)), mask_bytes((32, 32)), "mask_image"),
    ("img2img", {"strength": 0}, png_bytes(), None, "strength"),
    ("txt2img", {"panorama": True}, None, None, "panorama"),
    ("txt2img", {"lora_strength": "0.5"}, None, None, "lora_strength"),
    ("txt2img", {"lora_model": "a,b", "lora_strength": "0.5,0.6,0.7"}, None, None, "lora_strength"),
    ("txt2img", {"scheduler": "NoSuchScheduler"}, None, None, "scheduler"),
])
def test_to_params_refusals_name_the_field(task, body, init, mask, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInput) as e:
        to_params(req(**body), task, SD15, init, mask, PX)
    assert e.value.field == field


def test_clip_skip_and_vae_are_applied() -> None:
    p = to_params(req(clip_skip="2", vae="my-vae"), "txt2img", SD15, None, None, PX)
    assert (p.clip_skip, p.vae) == (2, "my-vae")
    p = to_params(req(vae="default"), "txt2img", SD15, None, None, PX)
    assert (p.clip_skip, p.vae) == (1, None)


def test_inpainting_only_model_on_other_routes() -> None:
    with pytest.raises(BadInput) as e:
        to_params(req(), "txt2img", INPAINT_ONLY, None, None, PX)
    assert e.value.field == "model_id"


def test_models() -> None:
    assert resolve_model(None, CATALOG, "sd15") is SD15
    assert resolve_model("stable-diffusion-v1-5", CATALOG, "sdxl") is SD15
    with pytest.raises(BadInput) as e:
        resolve_model("midjourney", CATALOG, "sd15")
    assert e.value.field == "model_id" and "known models" in e.value.message


def test_schedulers_by_diffusers_class_and_karras() -> None:
    assert resolve_scheduler(None, None) is None
    assert resolve_scheduler("DPMSolverMultistepScheduler", None) == "dpmpp_2m"
    assert resolve_scheduler("DPMSolverMultistepScheduler", True) == "dpmpp_2m_karras"
    assert resolve_scheduler("EulerAncestralDiscreteScheduler", False) == "euler_a"
    assert resolve_scheduler("UniPCMultistepScheduler", None) == "unipc"
    assert resolve_scheduler("ddim", None) == "ddim"
    assert resolve_scheduler("UniPCMultistepScheduler", True) == "unipc_karras"  # diffusers has it
    with pytest.raises(BadInput) as e:
        resolve_scheduler("DDIMScheduler", True)
    assert e.value.field == "use_karras_sigmas"
    with pytest.raises(BadInput, match="valid: .*EulerDiscreteScheduler"):
        resolve_scheduler("Bogus", None)


def test_image_sources() -> None:
    data = png_bytes()
    b64 = base64.b64encode(data).decode()
    assert image_source("https://example.com/a.png", "init_image") == "https://example.com/a.png"
    assert image_source(f"data:image/png;base64,{b64}", "init_image") == data
    assert image_source(b64[:40] + "\n" + b64[40:], "init_image") == data
    for bad in ("ftp://example.com/a.png", "data:image/png,rawtext", "not base64 !!"):
        with pytest.raises(BadInput) as e:
            image_source(bad, "mask_image")
        assert e.value.field == "mask_image"


def test_engine_fields_in_modelslab_terms() -> None:
    err = in_dialect_terms(BadInput("steps", "0 is not allowed"))
    assert (err.field, err.message) == ("num_inference_steps", "num_inference_steps: 0 is not allowed")
    assert in_dialect_terms(BadInput("image", "bad")).field == "init_image"
    same = BadInput("width", "bad")
    assert in_dialect_terms(same) is same


def test_meta_echoes_what_ran() -> None:
    p = to_params(req(seed=5, samples=2, strength=0.4), "img2img", SD15, png_bytes(), None, PX).resolve(SD15)
    x = Extras(base64=True, track_id="t-1", init_image="http://example.com/a.png")
    m = meta("job1", p, x)
    assert (m["seed"], m["seeds"], m["n_samples"], m["steps"], m["W"], m["width"]) == (5, [5, 6], 2, 20, 64, 64)
    assert (m["strength"], m["init_image"], m["base64"], m["track_id"], m["prompt"]) == (
        0.4, "http://example.com/a.png", "yes", "t-1", "a red fox")
    assert "mask_image" not in m


def test_reply_shapes() -> None:
    ok = success_body("j", 1.23456, ["http://h/o.png"], {"seed": 1}, track_id="t")
    assert (ok["status"], ok["id"], ok["output"], ok["generationTime"], ok["track_id"]) == (
        "success", "j", ["http://h/o.png"], 1.235, "t")
    pr = processing_body("j", 12.345, "http://h/api/v3/fetch/j", ["http://h/f.png"], {})
    assert pr["status"] == "processing" and pr["messege"] == pr["message"]
    assert (pr["eta"], pr["fetch_result"], pr["future_links"], pr["output"]) == (
        12.35, "http://h/api/v3/fetch/j", ["http://h/f.png"], [])
    fp = fetch_processing_body("j", 1.0, "u", ["f"])
    assert fp["status"] == "processing" and fp["messege"] == fp["message"] == "Request processing"
    fail = failed_body("j", "the engine ran out of memory")
    assert fail["status"] == "failed" and fail["message"].startswith("Failed, Try Again")
    assert system_load_body(3, 7.5) == {"queue_num": 3, "queue_time": 7.5, "status": "ok"}


def test_estimates() -> None:
    assert estimate_run_s([]) == 5.0
    assert estimate_run_s([1.0, 9.0, 2.0]) == 2.0
    assert eta_s(0, False, 2.0) == 2.0 and eta_s(3, False, 2.0) == 8.0 and eta_s(0, True, 2.0) == 1.0
