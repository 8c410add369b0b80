"""A1111 adapter: samplers through the one registry, checkpoints, plans and seeds, mask
polarity, "only masked" crop and paste-back, infotext, responses, progress and error bodies.

Pure functions over the built-in catalog and Pillow images; no engine, no HTTP.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from sdserve.api.dialects.a1111.adapter import (
    Plan,
    finish_output,
    generation_response,
    img2img_plan,
    output_format,
    progress_body,
    resolve_checkpoint,
    resolve_sampler,
    sampler_items,
    scheduler_items,
    txt2img_plan,
)
from sdserve.api.dialects.a1111.infotext import parse_infotext, read_image_info
from sdserve.api.dialects.a1111.inputs import (
    binary_mask,
    crop_region,
    decode_b64,
    expand_crop_region,
    prepare_mask,
    resize_image,
)
from sdserve.api.dialects.a1111.options import A1111_DEFAULTS, apply_options, effective_options
from sdserve.api.dialects.a1111.protocol import Img2ImgRequest, Txt2ImgRequest
from sdserve.api.errors import render_error
from sdserve.engine.params import MAX_SEED
from sdserve.engine.prepare import prepare
from sdserve.engine.schedulers import SCHEDULERS, get_scheduler
from sdserve.errors import BadInput, GenerationFailed, NotFound, QueueFull
from sdserve.images import encode_image, infotext
from tests.conftest import png_of

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
INPAINT = "@cf/runwayml/stable-diffusion-v1-5-inpainting"
PX = 4096 * 4096


def _b64(img: Image.Image) -> str:
    return base64.b64encode(png_of(img)).decode()


def _mask(size=(64, 64), box=(16, 16, 48, 48)) -> Image.Image:
    m = Image.new("L", size, 0)
    m.paste(255, box)
    return m


# -- samplers ---------------------------------------------------------------------------

def test_default_sampler_is_euler():
    # A1111 1.10's Euler: Automatic is k-diffusion's uniform (evenly spaced) timesteps.
    assert resolve_sampler(None, None, None).name == "euler_linspace"
    assert resolve_sampler(None, "Euler", None).name == "euler_linspace"  # the protocol's sampler_index default


@pytest.mark.parametrize("name,index,scheduler,expected", [
    ("Euler a", "Euler a", "automatic", "euler_a_linspace"),  # what webuiapi sends by default
    ("DPM++ 2M", None, "Karras", "dpmpp_2m_karras"),
    ("DPM++ 2M", None, None, "dpmpp_2m_karras"),  # A1111 1.10's default schedule for it
    ("DPM++ 2M Karras", None, None, "dpmpp_2m_karras"),  # legacy combined name
    ("DPM++ 2M Karras", None, "karras", "dpmpp_2m_karras"),
    ("dpm++ sde", None, "Automatic", "dpmpp_sde_karras"),
    ("Euler", None, "Karras", "euler_karras"),
    ("DDIM", None, None, "ddim"),
    ("LMS", None, None, "lms_linspace"),
    ("Heun", None, None, "heun_linspace"),
    ("Euler a", None, "normal", "euler_a_linspace"),  # SillyTavern's default schedule type
    ("LCM", None, None, "lcm"),
    (None, "DPM2 a", "Karras", "dpm2_a_karras"),
    ("", "UniPC", None, "unipc"),
])
def test_samplers_map_to_registry_entries(name, index, scheduler, expected):
    assert resolve_sampler(name, index, scheduler).name == expected


def test_unknown_sampler_lists_valid_names():
    with pytest.raises(BadInput) as e:
        resolve_sampler("Euler b", None, None)
    assert e.value.field == "sampler_name"
    assert "Euler a" in e.value.message and "DPM++ 2M" in e.value.message
    with pytest.raises(BadInput) as e:
        resolve_sampler(None, "Nope", None)
    assert e.value.field == "sampler_index"


@pytest.mark.parametrize("sampler,scheduler", [("Euler", "KL Optimal"), ("DDIM", "Karras"), ("Euler a", "Karras")])
def test_unavailable_schedule_types_name_the_scheduler_field(sampler, scheduler):
    with pytest.raises(BadInput) as e:
        resolve_sampler(sampler, None, scheduler)
    assert e.value.field == "scheduler"
    assert "Automatic" in e.value.message


def test_listed_samplers_and_schedulers_all_resolve():
    names = [s["name"] for s in sampler_items()]
    assert {"Euler", "Euler a", "DPM++ 2M", "DPM++ SDE", "DDIM", "LMS", "Heun", "LCM"} <= set(names)
    assert not any(n.endswith(" Karras") for n in names)  # A1111 1.9+: Karras is a schedule type
    for n in names:
        for sched in scheduler_items():
            try:
                entry = resolve_sampler(n, None, sched["label"])
            except BadInput as e:  # a schedule type diffusers lacks for this sampler
                assert e.field == "scheduler" and "takes: Automatic" in e.message
                continue
            assert get_scheduler(entry.name) is entry
    karras = {e.name for e in SCHEDULERS if e.overrides.get("use_karras_sigmas")}
    assert {"euler_karras", "dpmpp_2m_karras", "dpm2_karras", "dpm2_a_karras", "heun_karras"} <= karras


# -- checkpoints and formats ------------------------------------------------------------

@pytest.mark.parametrize("name", [SD15, f"{SD15} [6ce0161689]", "sd15", "stable-diffusion-v1-5"])
def test_checkpoint_by_title_id_or_alias(catalog, name):
    assert resolve_checkpoint(name, catalog).id == SD15


def test_unknown_checkpoint_lists_titles(catalog):
    with pytest.raises(BadInput) as e:
        resolve_checkpoint("v1-5-pruned-emaonly.safetensors [6ce0161689]", catalog)
    assert e.value.field == "sd_model_checkpoint" and SD15 in e.value.message


def test_samples_format():
    assert [output_format(v) for v in ("png", "jpg", "JPEG", "webp")] == ["png", "jpeg", "jpeg", "webp"]
    with pytest.raises(BadInput) as e:
        output_format("gif")
    assert e.value.field == "samples_format"


# -- txt2img plans ----------------------------------------------------------------------

def test_a1111_defaults(catalog):
    req = Txt2ImgRequest()
    assert (req.steps, req.cfg_scale, req.width, req.height, req.seed, req.sampler_index) == (50, 7.0, 512, 512, -1, "Euler")
    plan = txt2img_plan(req, catalog.get(SD15), "png")
    p = plan.params
    assert (p.steps, p.guidance, p.width, p.height, p.scheduler, p.n) == (50, 7.0, 512, 512, "euler_linspace", 1)
    assert 0 <= p.seed <= MAX_SEED  # -1 drew a seed
    assert plan.sampler_label == "Euler"


def test_seeds_continue_across_batches_like_a1111(catalog):
    req = Txt2ImgRequest(prompt="x", seed=10, batch_size=3, n_iter=2, width=64, height=64)
    plan = txt2img_plan(req, catalog.get(SD15), "png")
    assert [s for k in range(plan.n_iter) for s in plan.iteration(k).seeds] == [10, 11, 12, 13, 14, 15]
    top = txt2img_plan(Txt2ImgRequest(seed=MAX_SEED, batch_size=2, n_iter=2), catalog.get(SD15), "png")
    assert top.iteration(1).seed == 1  # wraps below 2**32 like GenerationParams.seeds


def test_blank_seed_is_random():
    assert Txt2ImgRequest(seed="").seed == -1 and Txt2ImgRequest(seed=None).seed == -1


@pytest.mark.parametrize("fields,field,status", [
    ({"enable_hr": True, "hr_scale": 9}, "hr_scale", 400),
    ({"enable_hr": True, "hr_second_pass_steps": -1}, "hr_second_pass_steps", 400),
    ({"enable_hr": True, "hr_sampler_name": "Euler b"}, "hr_sampler_name", 400),
    ({"enable_hr": True, "denoising_strength": 0}, "denoising_strength", 400),
    ({"refiner_checkpoint": "sdxl", "refiner_switch_at": 1.5}, "refiner_switch_at", 400),
    ({"script_name": "X/Y/Z plot"}, "script_name", 422),
    ({"alwayson_scripts": {"ADetailer": {"args": []}}}, "alwayson_scripts", 422),  # ControlNet is run
    ({"alwayson_scripts": {"controlnet": {"args": [{"model": "x"}]}}}, "alwayson_scripts.controlnet.args[0].image", 400),
    ({"subseed_strength": 0.3}, "subseed_strength", 400),
    ({"width": 5000}, "width", 400),
    ({"height": 32}, "height", 400),
    ({"sampler_name": "Euler b"}, "sampler_name", 400),
])
def test_unsupported_or_bad_fields_are_refused_by_name(catalog, fields, field, status):
    with pytest.raises(BadInput) as e:
        txt2img_plan(Txt2ImgRequest(prompt="x", **fields), catalog.get(SD15), "png")
    assert (e.value.field, e.value.status) == (field, status)


def test_inpainting_checkpoint_refuses_txt2img(catalog):
    with pytest.raises(BadInput) as e:
        txt2img_plan(Txt2ImgRequest(prompt="x"), catalog.get(INPAINT), "png")
    assert e.value.field == "sd_model_checkpoint"


# -- img2img inputs ---------------------------------------------------------------------

def test_decode_b64_accepts_data_uris_and_names_the_field():
    data = png_of(Image.new("RGB", (8, 8)))
    assert decode_b64(base64.b64encode(data).decode(), "f") == data
    assert decode_b64("data:image/png;base64," + base64.b64encode(data).decode(), "f") == data
    for bad in ("%%%", "data:image/png,abc", "https://example.com/a.png"):
        with pytest.raises(BadInput) as e:
            decode_b64(bad, "init_images[0]")
        assert e.value.field == "init_images[0]"


def test_mask_polarity_white_repaints_and_alpha_masks_read_by_alpha():
    assert binary_mask(_mask()).getpixel((32, 32)) == 255
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # black everywhere; opaque square = repaint
    rgba.paste((0, 0, 0, 255), (16, 16, 48, 48))
    m = binary_mask(rgba)
    assert (m.getpixel((32, 32)), m.getpixel((2, 2))) == (255, 0)
    half = Image.new("RGBA", (4, 4), (255, 255, 255, 128))  # exactly 128 keeps (alpha > 128 repaints)
    assert binary_mask(half).getpixel((0, 0)) == 0
    inverted = prepare_mask(_mask(), invert=True, blur_x=0, blur_y=0)
    assert (inverted.getpixel((32, 32)), inverted.getpixel((2, 2))) == (0, 255)
    blurred = prepare_mask(_mask(), invert=False, blur_x=4, blur_y=4)
    assert 0 < blurred.getpixel((16, 32)) < 255  # soft edge


def test_crop_region_and_aspect_expansion():
    assert crop_region(_mask(box=(10, 20, 30, 25)), pad=4) == (6, 16, 34, 29)
    assert crop_region(Image.new("L", (8, 8)), pad=4) is None
    # A wide region grows vertically to the 1:1 processing ratio, staying inside the image.
    assert expand_crop_region((10, 20, 50, 30), 64, 64, 100, 100) == (10, 5, 50, 45)
    assert expand_crop_region((0, 0, 40, 10), 64, 64, 100, 100) == (0, 0, 40, 40)
    assert expand_crop_region((90, 90, 100, 100), 128, 64, 100, 100) == (80, 90, 100, 100)  # 2:1, shifted inside


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_resize_modes_give_the_target_size(mode):
    out = resize_image(mode, Image.new("RGB", (100, 50), (200, 10, 10)), 64, 64)
    assert out.size == (64, 64)
    if mode == 2:  # fit and fill: the bars are stretched edges, not black
        assert out.getpixel((32, 2)) != (0, 0, 0)
    if mode == 1:  # crop to fill: no bars at all
        assert out.getpixel((32, 2)) == (200, 10, 10)


def test_img2img_plan_without_mask(catalog):
    raw = png_of(Image.new("RGB", (100, 70)))
    plan = img2img_plan(Img2ImgRequest(init_images=[base64.b64encode(raw).decode()], width=64, height=64, seed=4,
                                       denoising_strength=0.5), catalog.get(SD15), "png", PX)
    p = plan.params
    assert (p.task, p.strength, p.width, p.height, p.seed) == ("img2img", 0.5, 64, 64, 4)
    assert p.init_image == raw  # mode 0: the engine resizes, as for every dialect
    assert plan.crop is None


def test_img2img_inpaint_not_only_masked_keeps_the_frame(catalog):
    req = Img2ImgRequest(init_images=[_b64(Image.new("RGB", (64, 64)))], mask=_b64(_mask()), width=64, height=64,
                         inpaint_full_res=False, mask_blur=0)
    plan = img2img_plan(req, catalog.get(SD15), "png", PX)
    assert plan.params.task == "inpaint" and plan.crop is None
    m = Image.open(io.BytesIO(plan.params.mask_image))
    assert (m.getpixel((32, 32)), m.getpixel((2, 2))) == (255, 0)
    inv = img2img_plan(req.model_copy(update={"inpainting_mask_invert": 1}), catalog.get(SD15), "png", PX)
    m = Image.open(io.BytesIO(inv.params.mask_image))
    assert (m.getpixel((32, 32)), m.getpixel((2, 2))) == (0, 255)


def test_only_masked_crops_inpaints_and_pastes_back(catalog):
    original = Image.new("RGB", (128, 96), (10, 200, 10))
    req = Img2ImgRequest(init_images=[_b64(original)], mask=_b64(_mask((128, 96), (40, 30, 60, 50))), width=64,
                         height=64, mask_blur=0, inpaint_full_res_padding=4, seed=1)
    plan = img2img_plan(req, catalog.get(SD15), "png", PX)
    assert plan.crop is not None and plan.crop.box == (36, 26, 64, 54)
    assert Image.open(io.BytesIO(plan.params.init_image)).size == (64, 64)
    # The "inpainted" crop comes back red; only the masked square of the original turns red.
    text = "red\nSteps: 2, Sampler: Euler, Seed: 1"
    out = Image.open(io.BytesIO(finish_output(encode_image(Image.new("RGB", (64, 64), (250, 0, 0)), "png", text), plan)))
    assert out.size == (128, 96)
    assert out.getpixel((50, 40)) == (250, 0, 0) and out.getpixel((38, 28)) == (10, 200, 10)
    assert out.getpixel((5, 5)) == (10, 200, 10)
    assert out.text["parameters"] == text


@pytest.mark.parametrize("fields,field,cls", [
    ({"init_images": None}, "init_images", NotFound),
    ({"init_images": []}, "init_images", NotFound),
    ({"init_images": ["AAAA", "AAAA"]}, "init_images", BadInput),
    ({"init_images": ["not base64!"]}, "init_images[0]", BadInput),
    ({"init_images": [base64.b64encode(b"text").decode()]}, "init_images[0]", BadInput),
    ({"mask": "###"}, "mask", BadInput),
])
def test_bad_img2img_inputs(catalog, fields, field, cls):
    body = {"init_images": [_b64(Image.new("RGB", (64, 64)))], "width": 64, "height": 64, **fields}
    with pytest.raises(cls) as e:
        img2img_plan(Img2ImgRequest(**body), catalog.get(SD15), "png", PX)
    assert field in e.value.message


def test_inpainting_checkpoint_needs_a_mask(catalog):
    # The adapter translates; prepare() checks the task for every dialect (as the service does).
    with pytest.raises(BadInput) as e:
        prepare(catalog, img2img_plan(Img2ImgRequest(init_images=[_b64(Image.new("RGB", (64, 64)))], width=64,
                                                     height=64), catalog.get(INPAINT), "png", PX).params)
    assert e.value.field == "mask"


# -- infotext and responses -------------------------------------------------------------

def test_infotext_round_trip_through_png_and_jpeg():
    summary = {"prompt": "a cat,\nin a hat", "negative_prompt": "blurry", "steps": 20, "guidance": 7.0,
               "width": 64, "height": 96, "model": SD15, "task": "txt2img"}
    text = infotext(summary, 1234, "DPM++ 2M", "cpu", "float32")
    for fmt in ("png", "jpeg", "webp"):
        got, _ = read_image_info(encode_image(Image.new("RGB", (8, 8)), fmt, text))
        assert got == text
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "a cat,\nin a hat" and parsed["Negative prompt"] == "blurry"
    assert (parsed["Steps"], parsed["Sampler"], parsed["Seed"], parsed["Size-1"], parsed["Size-2"]) == \
        ("20", "DPM++ 2M", "1234", "64", "96")
    assert parse_infotext('p\nSteps: 2, Lora hashes: "a: 1, b: 2", Seed: 3')["Lora hashes"] == "a: 1, b: 2"


def test_generation_response_shape(catalog):
    req = Img2ImgRequest(prompt="p", init_images=[_b64(Image.new("RGB", (64, 64)))], width=64, height=64)
    plan = img2img_plan(req, catalog.get(SD15), "png", PX)
    imgs = [encode_image(Image.new("RGB", (64, 64)), "png", f"p\nSteps: 2, Seed: {s}") for s in (7, 8)]
    body = generation_response(req, plan, catalog.get(SD15), plan.params, imgs, [7, 8], 0.0)
    assert [base64.b64decode(i) for i in body["images"]] == imgs
    assert body["parameters"]["seed"] == -1 and body["parameters"]["init_images"] is None  # echo, not resolved
    info = json.loads(body["info"])
    assert info["seed"] == 7 and info["all_seeds"] == [7, 8]
    assert info["infotexts"] == ["p\nSteps: 2, Seed: 7", "p\nSteps: 2, Seed: 8"]
    assert (info["sampler_name"], info["denoising_strength"], info["sd_model_name"]) == ("Euler", 0.75, SD15)
    kept = generation_response(req.model_copy(update={"include_init_images": True, "send_images": False}), plan,
                               catalog.get(SD15), plan.params, imgs, [7, 8], 0.0)
    assert kept["images"] == [] and kept["parameters"]["init_images"] == req.init_images


def test_progress_formula():
    idle = progress_body(step=0, total=0, job_no=0, job_count=0, started=None, now=10)
    assert (idle["progress"], idle["eta_relative"], idle["current_image"], idle["state"]["job_count"]) == (0, 0, None, 0)
    busy = progress_body(step=5, total=10, job_no=1, job_count=2, started=100.0, now=110.0, current_image=b"\x89PNG")
    assert busy["progress"] == pytest.approx(0.01 + 0.5 + 0.25)
    assert busy["eta_relative"] == pytest.approx(10 / 0.76 - 10)
    assert base64.b64decode(busy["current_image"]) == b"\x89PNG"
    assert (busy["state"]["sampling_step"], busy["state"]["sampling_steps"], busy["state"]["job_no"]) == (5, 10, 1)


def test_options_defaults_are_a1111s_with_sdserves_effective_values():
    o = effective_options(SD15, 5)
    assert o["sd_model_checkpoint"] == SD15 and o["samples_format"] == "png"
    assert o["send_seed"] is True and o["send_size"] is True and o["CLIP_stop_at_last_layers"] == 1
    assert o["show_progress_every_n_steps"] == 5 and o["jpeg_quality"] == 95  # what sdserve does
    assert len(o) == len(A1111_DEFAULTS) > 250


def test_apply_options_applies_what_sdserve_honours_and_reports_the_rest():
    current = effective_options(SD15, 5)

    def check(key, value):
        if key == "live_previews_enable" and not isinstance(value, bool):
            raise BadInput(key, "must be true or false")
        return value

    skipped = apply_options(current, {"live_previews_enable": False, "send_seed": True, "CLIP_stop_at_last_layers": 2,
                                      "no_such_option": 1, "eta_ddim": 0.5}, check)
    assert current["live_previews_enable"] is False and current["CLIP_stop_at_last_layers"] == 2
    assert set(skipped) == {"eta_ddim", "no_such_option"}  # send_seed: already true
    assert current["eta_ddim"] == 0.0 and "no_such_option" not in current
    assert "AUTOMATIC1111" in skipped["no_such_option"]
    with pytest.raises(BadInput):
        apply_options(current, {"live_previews_enable": "yes", "samples_format": "png"}, check)
    assert current["live_previews_enable"] is False


def test_sides_off_the_grid_round_down_as_a1111s_latents_do(catalog):
    # Open WebUI sends what the user typed (500x500); A1111's latent is 500 // 8 = 62, so 496 px.
    plan = txt2img_plan(Txt2ImgRequest(prompt="x", width=500, height=343), catalog.get(SD15), "png")
    assert (plan.params.width, plan.params.height) == (496, 336)
    init = _b64(Image.new("RGB", (70, 70)))
    plan = img2img_plan(Img2ImgRequest(init_images=[init], width=71, height=64), catalog.get(SD15), "png", 10**7)
    assert (plan.params.width, plan.params.height) == (64, 64)
    for side in (63, 4097):
        with pytest.raises(BadInput, match="width"):
            txt2img_plan(Txt2ImgRequest(prompt="x", width=side), catalog.get(SD15), "png")


def test_plan_iteration_keeps_everything_but_the_seed(catalog):
    plan = txt2img_plan(Txt2ImgRequest(prompt="x", seed=3, batch_size=2, n_iter=3, width=64, height=64),
                        catalog.get(SD15), "webp")
    assert isinstance(plan, Plan)
    later = plan.iteration(2)
    assert later.seed == 7 and later.model_copy(update={"seed": 3}) == plan.params


# -- errors ---------------------------------------------------------------------------

def test_error_bodies_have_a1111_shape():
    r = render_error("/sdapi/v1/txt2img", BadInput("steps", "must be at least 1"))
    assert r.status_code == 400
    assert json.loads(r.body) == {"error": "HTTPException", "detail": "steps: must be at least 1", "body": "",
                                  "errors": "400: steps: must be at least 1"}
    r = render_error("/sdapi/v1/img2img", GenerationFailed("boom"))
    assert r.status_code == 500 and json.loads(r.body)["error"] == "GenerationFailed"
    r = render_error("/sdapi/v1/txt2img", QueueFull("busy", retry_after=4))
    assert (r.status_code, r.headers["retry-after"], json.loads(r.body)["error"]) == (503, "4", "HTTPException")


def test_engine_errors_are_renamed_to_a1111_fields():
    from sdserve.api.dialects.a1111.adapter import in_dialect_terms
    from sdserve.errors import PayloadTooLarge

    e = in_dialect_terms(BadInput("strength", "0.1 x 2 steps leaves no denoising step"))
    assert (e.field, e.message, e.status) == ("denoising_strength", "denoising_strength: 0.1 x 2 steps leaves no "
                                              "denoising step", 400)
    assert in_dialect_terms(BadInput("guidance", "x")).field == "cfg_scale"
    big = in_dialect_terms(PayloadTooLarge("image", "too many pixels"))
    assert isinstance(big, PayloadTooLarge) and (big.field, big.status) == ("init_images[0]", 413)


def test_tiling_is_applied_not_refused(catalog):
    plan = txt2img_plan(Txt2ImgRequest(prompt="x", tiling=True), catalog.get(SD15), "png")
    assert plan.params.tiling and not txt2img_plan(Txt2ImgRequest(prompt="x"), catalog.get(SD15), "png").params.tiling
