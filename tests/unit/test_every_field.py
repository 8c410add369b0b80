"""Refuse or apply, never ignore: every field of every dialect's request model is classified
here, and each class is checked.

- ``Applied(value)``: sent with ``value``, the adapter's output (GenerationParams, the A1111
  plan, or the response body) differs from the same request without it.
- ``Refused(value)``: sent with ``value``, the adapter raises a 4xx naming the field.
- ``Elsewhere(test)``: applied outside the pure adapter (routes, the job service); ``test`` is
  the test that shows the effect.
- ``NoOp(reason)``: accepted and documented as changing nothing, with why.

A field added to a request model without an entry here fails ``test_every_field_is_classified``.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel

from sdserve.api.dialects.a1111 import adapter as a1111
from sdserve.api.dialects.a1111.protocol import Img2ImgRequest, Txt2ImgRequest
from sdserve.api.dialects.modelslab import adapter as modelslab
from sdserve.api.dialects.modelslab.outpaint import OutpaintRequest, outpaint_params
from sdserve.api.dialects.modelslab.protocol import GenerateRequest
from sdserve.api.dialects.native import adapter as native
from sdserve.api.dialects.native.protocol import JobRequest
from sdserve.api.dialects.openai import adapter as openai
from sdserve.api.dialects.openai.protocol import ImageEditForm, ImageGenerateRequest, ImageVariationForm
from sdserve.api.dialects.workers_ai import adapter as workers_ai
from sdserve.api.dialects.workers_ai.protocol import TextToImageInput
from sdserve.engine.catalog import Catalog
from sdserve.errors import BadInput

CATALOG = Catalog.builtin()
SD15 = CATALOG.get("sd15")


@dataclass(frozen=True)
class Applied:
    value: Any
    base: dict[str, Any] | None = None  # extra fields both requests carry (what the field needs)


@dataclass(frozen=True)
class Refused:
    value: Any


@dataclass(frozen=True)
class Elsewhere:
    test: str


@dataclass(frozen=True)
class NoOp:
    reason: str
    value: Any = None  # sent, it leaves the adapter's output as it was (None: an OpenAI form)


def _png(size: tuple[int, int] = (80, 64)) -> bytes:
    img = Image.new("RGB", size)
    img.putdata([(x * 3 % 256, y * 4 % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _mask(size: tuple[int, int] = (80, 64)) -> bytes:
    m = Image.new("L", size, 0)
    m.paste(255, (20, 16, 50, 40))
    buf = io.BytesIO()
    m.save(buf, format="PNG")
    return buf.getvalue()


def _alpha_mask(size: tuple[int, int] = (80, 64)) -> bytes:
    """An RGBA mask with graded transparency: what mask_round rounds (A1111 reads it by alpha)."""
    m = Image.new("RGBA", size)
    m.putdata([(0, 0, 0, x * 3 % 256) for _ in range(size[1]) for x in range(size[0])])
    buf = io.BytesIO()
    m.save(buf, format="PNG")
    return buf.getvalue()


B64, MASK_B64 = base64.b64encode(_png()).decode(), base64.b64encode(_mask()).decode()
_HR = {"enable_hr": True}

# -- AUTOMATIC1111 -------------------------------------------------------------------------

A1111_COMMON: dict[str, Any] = {
    "prompt": Applied("a red kite"),
    "negative_prompt": Applied("fog"),
    "styles": Elsewhere("tests/integration/test_every_field_routes.py::test_a1111_styles_apply_styles_csv"),
    "seed": Applied(7),
    "subseed": NoOp("read only with subseed_strength (refused when not 0); echoed in info as A1111 does", 5),
    "subseed_strength": Refused(0.5),
    "seed_resize_from_h": Refused(256),
    "seed_resize_from_w": Refused(256),
    "sampler_name": Applied("DPM++ 2M"),
    "scheduler": Applied("Karras"),
    "batch_size": Applied(2),
    "n_iter": Applied(3),
    "steps": Applied(9),
    "cfg_scale": Applied(3.0),
    "width": Applied(256),
    "height": Applied(256),
    "restore_faces": Elsewhere("tests/integration/test_faces.py::test_a1111_restore_faces (override_settings "
                               "and options pick the restorer; shared_settings)"),
    "tiling": Applied(True),
    "do_not_save_samples": NoOp("sdserve writes no sample files; outputs are stored per job and returned", True),
    "do_not_save_grid": NoOp("sdserve makes no grids", True),
    "eta": Refused(0.5),
    "s_min_uncond": Refused(0.5),
    "s_churn": Refused(1.0),
    "s_tmax": Refused(5.0),
    "s_tmin": Refused(1.0),
    "s_noise": Refused(0.9),
    "override_settings": Elsewhere("tests/integration/test_a1111_addons.py (clip skip, VAE, refusals)"),
    "override_settings_restore_afterwards": Elsewhere(
        "tests/integration/test_every_field_routes.py::test_a1111_overrides_stay_when_not_restored"),
    "refiner_checkpoint": Elsewhere("tests/integration/test_hires.py (an SDXL model finishes the schedule; "
                                    "checked against the catalog at submit)"),
    "refiner_switch_at": NoOp("read only with refiner_checkpoint (A1111 too)", 0.8),
    "disable_extra_networks": Refused(True),
    "firstpass_image": Refused(B64),
    "comments": NoOp("A1111 shows them in its UI only", {"note": "x"}),
    "force_task_id": NoOp("A1111's id for its UI's progress polling; /progress here follows the running job", "task(abc)"),
    "sampler_index": Applied("Euler a"),
    "script_name": Refused("X/Y/Z plot"),
    "script_args": NoOp("read only with script_name, which is refused", [1, 2]),
    "send_images": Applied(False),
    "save_images": NoOp("outputs are always stored (job outputs, retention_s); there is no other save", True),
    "alwayson_scripts": Refused({"ADetailer": {"args": []}}),
    "infotext": Refused("a cat\nSteps: 20"),
}
A1111_TXT2IMG = {
    **A1111_COMMON,
    "denoising_strength": Applied(0.5, _HR),
    "enable_hr": Applied(True),
    "firstphase_width": Applied(256, _HR),
    "firstphase_height": Applied(256, _HR),
    "hr_scale": Applied(1.5, _HR),
    "hr_second_pass_steps": Applied(10, _HR),
    "hr_resize_x": Applied(768, _HR),
    "hr_resize_y": Applied(768, _HR),
    "hr_upscaler": Applied("Lanczos", _HR),
    "hr_checkpoint_name": Applied("sd15", _HR),
    "hr_sampler_name": Applied("Euler a", _HR),
    "hr_scheduler": Applied("Karras", _HR),
    "hr_prompt": Applied("a blue kite", _HR),
    "hr_negative_prompt": Applied("rain", _HR),
}
_MASKED = {"mask": MASK_B64, "inpaint_full_res": False}
A1111_IMG2IMG = {
    **A1111_COMMON,
    "init_images": Applied([base64.b64encode(_png((96, 64))).decode()]),
    "resize_mode": Applied(1),
    "denoising_strength": Applied(0.3),
    "image_cfg_scale": NoOp("only instruct-pix2pix models read it (A1111 too); none is served", 1.5),
    "mask": Applied(MASK_B64),
    "mask_blur_x": Applied(9, {**_MASKED, "mask_blur_y": 0}),
    "mask_blur_y": Applied(9, {**_MASKED, "mask_blur_x": 0}),
    "mask_blur": Applied(9, _MASKED),
    "mask_round": Applied(False, {**_MASKED, "mask": base64.b64encode(_alpha_mask()).decode()}),
    "inpainting_fill": Applied(1, _MASKED),
    "inpaint_full_res": Applied(False, {"mask": MASK_B64}),
    "inpaint_full_res_padding": Applied(8, {"mask": MASK_B64}),
    "inpainting_mask_invert": Applied(1, _MASKED),
    "initial_noise_multiplier": Refused(0.5),
    "latent_mask": Refused(MASK_B64),
    "include_init_images": Applied(True),
    # The "SD upscale" script runs (tests/integration/test_sd_upscale.py); other names stay refused.
    "script_name": Applied("sd upscale"),
    "script_args": Applied([None, 16, 1, 2], {"script_name": "sd upscale"}),
}


def _a1111_out(model: type[BaseModel], body: dict[str, Any]) -> Any:
    req = model.model_validate({"prompt": "x", "seed": 1, "subseed": 1, **body})
    if isinstance(req, Txt2ImgRequest):
        plan = a1111.txt2img_plan(req, SD15, "png")
    else:
        plan = a1111.img2img_plan(req, SD15, "png", 10**8, ["None", "Lanczos", "Nearest"])  # type: ignore[arg-type]
    resp = a1111.generation_response(req, plan, SD15, plan.params, [_png()], [1], 0.0)  # type: ignore[arg-type]
    return (plan.params, plan.n_iter, plan.sampler_label, plan.crop and plan.crop.box, resp["images"] != [],
            resp["parameters"].get("init_images"))


# -- ModelsLab ------------------------------------------------------------------------------

MODELSLAB = {
    "key": Elsewhere("tests/integration/test_modelslab.py (the key in the body authenticates)"),
    "model_id": Elsewhere("tests/integration/test_modelslab.py (resolve_model picks the model)"),
    "prompt": Applied("a red kite"),
    "negative_prompt": Applied("fog"),
    "init_image": Elsewhere("tests/integration/test_modelslab.py (fetched or decoded by the route)"),
    "mask_image": Elsewhere("tests/integration/test_modelslab.py (fetched or decoded by the route)"),
    "width": Applied(256),
    "height": Applied(256),
    "samples": Applied(2),
    "num_inference_steps": Applied(9),
    "safety_checker": Applied("yes"),
    "enhance_prompt": Applied("no"),
    "guidance_scale": Applied(3),
    "strength": Elsewhere("test_modelslab_adapter.py::test_to_params_img2img (img2img/inpaint only)"),
    "prompt_strength": Elsewhere("test_modelslab_adapter.py (img2img/inpaint only; older name of strength)"),
    "seed": Applied(7),
    "base64": Elsewhere("tests/integration/test_modelslab.py (output as base64 strings)"),
    "multi_lingual": Refused("yes"),
    "panorama": Refused("yes"),
    "self_attention": Refused("yes"),
    "upscale": Elsewhere("tests/integration/test_upscale.py (the route adds the upscaler it finds)"),
    "embeddings_model": Applied("easynegative"),
    "lora_model": Applied("more_details"),
    "vae": Applied("my-vae"),
    "scheduler": Applied("EulerDiscreteScheduler"),
    "use_karras_sigmas": Applied("yes", {"scheduler": "DPMSolverMultistepScheduler"}),
    "clip_skip": Applied(2),
    "tomesd": NoOp("upstream's token-merging speed-up; sdserve never merges tokens (full-quality attention)", "yes"),
    "temp": NoOp("upstream's temporary links; outputs follow the server's retention", "yes"),
    "safety_checker_type": Applied("blur", {"safety_checker": "yes"}),
    "algorithm_type": Refused("sde-dpmsolver++"),
    "enhance_style": Refused("cinematic"),
    "lora_strength": Applied("0.7", {"lora_model": "more_details"}),
    "highres_fix": Applied("yes"),
    **{f: Elsewhere("tests/integration/test_controlnet_dialects.py (images fetched by the route)")
       for f in ("ip_adapter_id", "ip_adapter_scale", "ip_adapter_image", "controlnet_model", "controlnet_type",
                 "controlnet_conditioning_scale", "control_image", "auto_hint", "guess_mode")},
    "controlnet_image": Refused("https://example.com/edges.png"),
    "webhook": Elsewhere("tests/integration/test_modelslab.py (completion webhook)"),
    "track_id": Elsewhere("tests/integration/test_modelslab.py (echoed in the reply and webhook)"),
    "instant_response": Elsewhere("tests/integration/test_modelslab.py (answers processing at once)"),
}


MODELSLAB_OUTPAINT = {
    "key": Elsewhere("tests/integration/test_modelslab.py (the key in the body authenticates)"),
    "model_id": Elsewhere("tests/integration/test_outpaint.py::test_modelslab_outpaint_endpoint (resolve_model)"),
    "image": Elsewhere("tests/integration/test_outpaint.py::test_modelslab_outpaint_endpoint (fetched or decoded)"),
    "prompt": Applied("a red kite"),
    "negative_prompt": Applied("fog"),
    "width": Applied(512),
    "height": Applied(512),
    "overlap_width": Applied(20),
    "num_inference_steps": Applied(9),
    "guidance_scale": Applied(3),
    "seed": Applied(7),
    "temp": NoOp("upstream's temporary links; outputs follow the server's retention", True),
    "base64": Elsewhere("tests/integration/test_outpaint.py::test_modelslab_outpaint_endpoint (base64 output)"),
    "webhook": Elsewhere("tests/integration/test_modelslab.py (completion webhook: the same reply path)"),
    "track_id": Elsewhere("tests/integration/test_modelslab.py (echoed in the reply and webhook: same path)"),
}


def _modelslab_outpaint_out(body: dict[str, Any]) -> Any:
    return outpaint_params(OutpaintRequest.model_validate({"seed": 1, **body}), SD15, _png(), 10**8)


def _modelslab_out(body: dict[str, Any]) -> Any:
    return modelslab.to_params(GenerateRequest.model_validate({"prompt": "x", "seed": 1, **body}), "txt2img", SD15,
                               None, None)


# -- native, OpenAI, Workers AI -------------------------------------------------------------

NATIVE = {
    "model": Applied("sdxl"),
    "prompt": Applied("a red kite"),
    "negative_prompt": Applied("fog"),
    "prompt_syntax": Applied("plain"),
    "width": Applied(256),
    "height": Applied(256),
    "steps": Applied(9),
    "guidance": Applied(3.0),
    "seed": Applied(7),
    "n": Applied(2),
    "strength": Applied(0.4, {"image": B64}),
    "image": Applied(B64),
    "mask": Applied(MASK_B64, {"image": B64}),
    "scheduler": Applied("euler"),
    "output_format": Applied("webp"),
    "clip_skip": Applied(2),
    "vae": Applied("my-vae"),
    "loras": Applied([{"name": "more_details", "weight": 0.5}]),
    "control": Applied([{"model": "canny", "image": B64}]),
    "ip_adapter": Applied({"model": "ip-adapter_sd15", "image": B64}),
    "tiling": Applied(True),
    "upscale": Applied({"upscaler": "Lanczos", "scale": 2}),
    "hires": Applied({"scale": 2}),
    "refiner": Applied({"model": "sdxl", "switch_at": 0.8}),
    "safety_check": Applied(True),
    "safety_mode": Applied("blur"),
    "enhance_prompt": Applied(True),
    "face_restoration": Applied([{"model": "GFPGAN", "visibility": 0.5},
                                 {"model": "CodeFormer", "visibility": 0.8, "weight": 0.7}]),
    "webhook": Elsewhere("tests/integration/test_jobs_webhooks.py"),
    "webhook_events": Elsewhere("tests/integration/test_jobs_webhooks.py (start events)"),
    "priority": Elsewhere("tests/integration/test_jobs_queue.py (order among a key's jobs)"),
    "outpaint": Applied({"left": 16, "overlap": 4}, {"image": B64}),
}


def _native_out(body: dict[str, Any]) -> Any:
    req = JobRequest.model_validate({"model": "sd15", "prompt": "x", "seed": 1, **body})
    return native.to_params(req, CATALOG.get(req.model))


_OPENAI_EXTRAS = {"negative_prompt": Applied("fog"), "seed": Applied(7), "steps": Applied(9), "guidance": Applied(3.0)}
OPENAI_GENERATE = {
    "prompt": Applied("a red kite"),
    "model": Elsewhere("tests/integration/test_openai.py (resolve_model; OpenAI's names map to the default)"),
    "n": Applied(2),
    "quality": NoOp("steps decide quality here; echoed in stream events", "hd"),
    "response_format": Elsewhere("tests/integration/test_openai.py (url or b64_json)"),
    "output_format": Applied("webp"),
    "output_compression": NoOp("outputs are lossless PNG or quality-95 JPEG/WebP", 50),
    "size": Applied("256x256"),
    "style": NoOp("dall-e-3's vivid/natural; say it in the prompt", "vivid"),
    "user": NoOp("an end-user id for OpenAI's abuse monitoring; sdserve keys its callers by API key", "u-1"),
    "background": NoOp("images are opaque; echoed in stream events", "transparent"),
    "moderation": NoOp("sdserve runs no moderation", "low"),
    "stream": Elsewhere("tests/integration/test_openai.py (server-sent events)"),
    "partial_images": Elsewhere("tests/integration/test_openai.py (partial image events)"),
    **_OPENAI_EXTRAS,
}
OPENAI_EDIT = {
    **{k: OPENAI_GENERATE[k] for k in ("prompt", "model", "n", "size", "response_format", "output_format",
                                       "output_compression", "quality", "background", "user", "stream",
                                       "partial_images")},
    "input_fidelity": NoOp("gpt-image-1's; the edit keeps the input through strength", "high"),
    "strength": Elsewhere("tests/unit/test_openai_adapter.py (edit strength)"),
    **_OPENAI_EXTRAS,
}
OPENAI_VARIATION = {
    **{k: OPENAI_GENERATE[k] for k in ("model", "n", "response_format", "size", "user", "output_format")},
    "prompt": Elsewhere("tests/unit/test_openai_adapter.py (steers the variation)"),
    "strength": Elsewhere("tests/unit/test_openai_adapter.py (how far from the input)"),
    **_OPENAI_EXTRAS,
}
for _t in (OPENAI_EDIT, OPENAI_VARIATION):
    for _k in ("prompt", "n", "output_format", "size", "negative_prompt", "seed", "steps", "guidance"):
        if isinstance(_t.get(_k), Applied):
            _t[_k] = Elsewhere("tests/unit/test_openai_adapter.py (edit and variation params)")


def _openai_out(body: dict[str, Any]) -> Any:
    return openai.generation_params(ImageGenerateRequest.model_validate({"prompt": "x", **body}), SD15)


_BYTES = list(_png((64, 64)))
WORKERS_AI = {
    "prompt": Applied("a red kite"),
    "negative_prompt": Applied("fog"),
    "height": Applied(512),
    "width": Applied(512),
    "image": Applied(_BYTES),
    "image_b64": Applied(base64.b64encode(_png((64, 64))).decode()),
    "mask": Applied(list(_mask((64, 64))), {"image": _BYTES}),
    "num_steps": Applied(9),
    "strength": Applied(0.4, {"image": _BYTES}),
    "guidance": Applied(3.0),
    "seed": Applied(7),
}


def _workers_out(body: dict[str, Any]) -> Any:
    return workers_ai.to_params(TextToImageInput.model_validate({"prompt": "x", **body}), SD15)


DIALECTS = [
    ("a1111 txt2img", Txt2ImgRequest, A1111_TXT2IMG, lambda b: _a1111_out(Txt2ImgRequest, b)),
    ("a1111 img2img", Img2ImgRequest, A1111_IMG2IMG,
     lambda b: _a1111_out(Img2ImgRequest, {"init_images": [B64], "width": 64, "height": 64, **b})),
    ("modelslab", GenerateRequest, MODELSLAB, _modelslab_out),
    ("modelslab outpaint", OutpaintRequest, MODELSLAB_OUTPAINT, _modelslab_outpaint_out),
    ("native", JobRequest, NATIVE, _native_out),
    ("openai generate", ImageGenerateRequest, OPENAI_GENERATE, _openai_out),
    ("openai edit", ImageEditForm, OPENAI_EDIT, None),
    ("openai variation", ImageVariationForm, OPENAI_VARIATION, None),
    ("workers ai", TextToImageInput, WORKERS_AI, _workers_out),
]
CASES = [(name, field, verdict, out) for name, _, table, out in DIALECTS for field, verdict in table.items()]


@pytest.mark.parametrize(("name", "model", "table"), [(n, m, t) for n, m, t, _ in DIALECTS])
def test_every_field_is_classified(name: str, model: type[BaseModel], table: dict[str, Any]) -> None:
    assert set(model.model_fields) == set(table), f"{name}: classify {set(model.model_fields) ^ set(table)}"


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, default=repr, sort_keys=True) == json.dumps(b, default=repr, sort_keys=True)


@pytest.mark.parametrize(("name", "field", "verdict", "out"),
                         [c for c in CASES if isinstance(c[2], Applied)], ids=lambda v: str(v)[:40])
def test_applied_fields_change_the_output(name: str, field: str, verdict: Applied, out: Any) -> None:
    base = verdict.base or {}
    assert not _same(out(base), out({**base, field: verdict.value})), f"{name}.{field} changed nothing"


@pytest.mark.parametrize(("name", "field", "verdict", "out"),
                         [c for c in CASES if isinstance(c[2], Refused)], ids=lambda v: str(v)[:40])
def test_refused_fields_are_4xx_naming_the_field(name: str, field: str, verdict: Refused, out: Any) -> None:
    with pytest.raises(BadInput) as e:
        out({field: verdict.value})
    assert e.value.field == field and 400 <= e.value.status < 500


@pytest.mark.parametrize(("name", "field", "verdict", "out"),
                         [c for c in CASES if isinstance(c[2], NoOp) and c[3] is not None], ids=lambda v: str(v)[:40])
def test_no_op_fields_change_nothing(name: str, field: str, verdict: NoOp, out: Any) -> None:
    assert _same(out({}), out({field: verdict.value})), f"{name}.{field} changed the output"
