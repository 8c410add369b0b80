"""AUTOMATIC1111 <-> GenerationParams, as pure functions.

A request becomes a ``Plan``: the first job's GenerationParams (``n`` = batch_size) and
``n_iter`` jobs in all, whose seeds continue as A1111's do (seed + k * batch_size), so the
same request gives the same images as A1111's numbering and as any other dialect asking for
those seeds. Sampler labels map onto the engine's one scheduler registry (samplers.py).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from sdserve import __version__
from sdserve.engine.addon_files import AddonFile
from sdserve.engine.catalog import Catalog, ModelSpec
from sdserve.engine.hires import DEFAULT_HIRES_STRENGTH, MAX_HIRES_SCALE, HiresFix, Refiner, infotext_fields
from sdserve.engine.faces import restorer_name
from sdserve.engine.params import MAX_SEED, FaceRestoration, GenerationParams, OutputFormat, Task, input_images, random_seed
from sdserve.engine.preprocessors import Annotate
from sdserve.engine.schedulers import SchedulerEntry
from sdserve.errors import BadInput, NotFound
from sdserve.images import decode_image, encode_image

from .controlnet import Units, detected_maps, script_names, units_of
from .inputs import (
    Crop,
    crop_region,
    decode_b64,
    expand_crop_region,
    fill_masked,
    paste_back,
    prepare_mask,
    resize_image,
    to_png,
)
from .infotext import parse_infotext, read_image_info
from .protocol import Img2ImgRequest, Txt2ImgRequest
from .scripts import SD_UPSCALE_FIELDS, is_sd_upscale, sd_upscale_of
from .samplers import SAMPLERS, SCHEDULE_TYPES, a1111_label, resolve_a1111

__all__ = [
    "Plan",
    "resolve_sampler",
    "resolve_checkpoint",
    "checkpoint_of",
    "output_format",
    "txt2img_plan",
    "img2img_plan",
    "finish_output",
    "generation_response",
    "sd_model_item",
    "sampler_items",
    "scheduler_items",
    "progress_body",
    "ENGINE_FIELDS",
    "in_dialect_terms",
    "clip_skip_setting",
    "vae_setting",
    "shared_settings",
    "face_weight_setting",
]

# Engine field names that A1111 calls otherwise, so an engine error names what the caller sent.
ENGINE_FIELDS = {"strength": "denoising_strength", "guidance": "cfg_scale", "scheduler": "sampler_name",
                 "image": "init_images[0]", "n": "batch_size", "vae": "sd_vae",
                 "clip_skip": "CLIP_stop_at_last_layers",
                 # LoRAs and embeddings come from the prompt (<lora:...> tags, embedding names)
                 "loras": "prompt", "embeddings": "prompt",
                 # hires fix and refiner (hires.py)
                 "hires": "enable_hr", "hires.upscaler": "hr_upscaler", "hires.scale": "hr_scale",
                 "hires.resize_x": "hr_resize_x", "hires.model": "hr_checkpoint_name",
                 "hires.scheduler": "hr_sampler_name", "hires.prompt": "hr_prompt",
                 "hires.negative_prompt": "hr_negative_prompt", "refiner": "refiner_checkpoint",
                 "refiner.model": "refiner_checkpoint", "face_restoration": "restore_faces"}
_FORMATS: dict[str, OutputFormat] = {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"}
_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]$")


def resolve_sampler(sampler_name: str | None, sampler_index: str | None, scheduler: str | None) -> SchedulerEntry:
    """The registry entry for A1111's sampler (``sampler_name``, else the legacy
    ``sampler_index``, else Euler) and schedule type; BadInput listing valid names."""
    field = "sampler_name" if sampler_name else "sampler_index"
    return resolve_a1111(sampler_name or sampler_index or "Euler", scheduler, field)


def resolve_checkpoint(name: str, catalog: Catalog, field: str = "sd_model_checkpoint") -> ModelSpec:
    """A checkpoint by title (``id [hash]``), id or alias; BadInput listing the titles."""
    for candidate in (name, _HASH_SUFFIX.sub("", name.strip())):
        if candidate in catalog:
            return catalog.get(candidate)
    raise BadInput(field, f"model {name!r} not found; available: {', '.join(s.id for s in catalog)}")


def _override(req: Txt2ImgRequest | Img2ImgRequest, key: str) -> Any:
    return (req.override_settings or {}).get(key)


def checkpoint_of(req: Txt2ImgRequest | Img2ImgRequest, current: str, catalog: Catalog) -> ModelSpec:
    """``override_settings.sd_model_checkpoint`` if given, else the current checkpoint."""
    name = _override(req, "sd_model_checkpoint")
    if name is None:
        return catalog.get(current)
    if not isinstance(name, str):
        raise BadInput("override_settings.sd_model_checkpoint", "must be a model title (string)")
    return resolve_checkpoint(name, catalog, "override_settings.sd_model_checkpoint")


# sd_vae values meaning "the checkpoint's own VAE" (A1111's Automatic also looks for a VAE
# file named after the checkpoint; sdserve's checkpoints carry theirs).
_OWN_VAE = {"automatic", "none", ""}


def clip_skip_setting(value: Any, field: str = "CLIP_stop_at_last_layers") -> int:
    """A1111's ``CLIP_stop_at_last_layers`` (1 = the last layer) as the engine's clip_skip."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or not 1 <= value <= 12:
        raise BadInput(field, f"{value!r} is not allowed: use a whole number from 1 to 12")
    return int(value)


def vae_setting(value: Any, field: str = "sd_vae") -> str | None:
    """A1111's ``sd_vae`` (a VAE file name, or Automatic/None for the checkpoint's own) as
    the engine's vae (None: the model's own)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(field, "must be a VAE name (GET /sdapi/v1/sd-vae), 'Automatic' or 'None'")
    return None if value.strip().lower() in _OWN_VAE else value.strip()


def shared_settings(req: Txt2ImgRequest | Img2ImgRequest, options: dict[str, Any]) -> dict[str, Any]:
    """The GenerationParams fields A1111 takes from its settings: ``override_settings`` for
    this request, else the server's options (``POST /sdapi/v1/options``)."""
    over = req.override_settings or {}

    def pick(key: str) -> tuple[Any, str]:
        return (over[key], f"override_settings.{key}") if key in over else (options.get(key), key)

    return {"clip_skip": clip_skip_setting(*pick("CLIP_stop_at_last_layers")), "vae": vae_setting(*pick("sd_vae")),
            "face_restoration": face_restoration_setting(req.restore_faces, pick)}


def face_weight_setting(value: Any, field: str = "code_former_weight") -> float:
    """A1111's ``code_former_weight``: a number from 0 to 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise BadInput(field, f"{value!r} is not allowed: use a number from 0 to 1")
    return float(value)


def face_restoration_setting(restore: bool | None, pick: Any) -> tuple[FaceRestoration, ...]:
    """``restore_faces`` (None: the ``face_restoration`` setting) as the engine's one step,
    with ``face_restoration_model`` and ``code_former_weight`` from override_settings or the
    options; the engine checks that the restorer is installed (``restore_faces`` named)."""
    if restore is None:
        restore = bool(pick("face_restoration")[0])
    if not restore:
        return ()
    model, field = pick("face_restoration_model")
    name = restorer_name(str(model or "GFPGAN"), field=field)
    weight = face_weight_setting(*pick("code_former_weight"))
    return (FaceRestoration(model=name, visibility=1.0, weight=weight),)


def output_format(value: Any, field: str = "samples_format") -> OutputFormat:
    """A1111's ``samples_format`` (png, jpg, webp) as an engine output format."""
    fmt = _FORMATS.get(str(value).lower()) if value is not None else None
    if fmt is None:
        raise BadInput(field, f"{value!r} is not one of png, jpg, webp")
    return fmt


@dataclass(frozen=True)
class Plan:
    """What one A1111 request runs: ``n_iter`` jobs like ``params`` with continuing seeds."""

    params: GenerationParams
    n_iter: int
    sampler_label: str
    crop: Crop | None = None
    # The request's ControlNet units (alwayson_scripts.controlnet): their fields' names.
    control: Units | None = None

    @property
    def names(self) -> dict[str, str]:
        """Engine field -> this request's field, for errors."""
        return {**ENGINE_FIELDS, **(self.control.fields if self.control else {}),
                **(SD_UPSCALE_FIELDS if self.params.sd_upscale is not None else {})}

    def iteration(self, k: int) -> GenerationParams:
        seed = ((self.params.seed or 0) + k * self.params.n) % (MAX_SEED + 1)
        return self.params.model_copy(update={"seed": seed})


def _refuse_unsupported(req: Txt2ImgRequest | Img2ImgRequest) -> None:
    # Refused rather than ignored: the caller would otherwise get an image without the
    # effect asked for and no hint why.
    if req.script_name and not (isinstance(req, Img2ImgRequest) and is_sd_upscale(req.script_name)):
        raise _unprocessable("script_name", f"Script '{req.script_name}' not found (sdserve runs no scripts)")
    for name in script_names(req.alwayson_scripts):  # ControlNet is read by controlnet.units_of
        raise _unprocessable("alwayson_scripts", f"always on script {name} not found (sdserve runs ControlNet only)")
    if req.subseed_strength:
        raise BadInput("subseed_strength", "variation seeds are not supported; send 0")
    if req.infotext:
        raise BadInput("infotext", "filling fields from an infotext is not supported; send the fields themselves")
    _refuse_non_defaults(req)


# Fields sdserve has no implementation for, refused unless they hold a value that changes
# nothing (A1111's own default, or what the engine does anyway): field -> (no-op values, why).
_NO_OP: dict[str, tuple[tuple[Any, ...], str]] = {
    "s_churn": ((None, 0, 0.0), "the k-diffusion churn parameters are not implemented"),
    "s_tmin": ((None, 0, 0.0), "the k-diffusion churn parameters are not implemented"),
    "s_tmax": ((None, 0, 0.0, float("inf")), "the k-diffusion churn parameters are not implemented"),
    "s_noise": ((None, 1, 1.0), "the k-diffusion noise multiplier is not implemented"),
    "s_min_uncond": ((None, 0, 0.0), "skipping the negative prompt at low sigma is not implemented"),
    "seed_resize_from_h": ((-1, 0), "resizing the seed's noise is not implemented"),
    "seed_resize_from_w": ((-1, 0), "resizing the seed's noise is not implemented"),
    "disable_extra_networks": ((False,), "extra networks in the prompt are read as the prompt says"),
    "firstpass_image": ((None, ""), "a hires fix first pass is not supported"),
    "initial_noise_multiplier": ((None, 1, 1.0), "the initial noise is not rescaled"),
}
# eta: A1111's default for each family of samplers (DDIM-style 0, ancestral 1) changes nothing;
# another value would need the scheduler's eta, which sdserve does not pass yet.
_ETA_DEFAULTS = (0, 0.0, 1, 1.0)


def _refuse_non_defaults(req: Txt2ImgRequest | Img2ImgRequest) -> None:
    for name, (no_op, why) in _NO_OP.items():
        value = getattr(req, name, None)
        if value not in no_op:
            raise BadInput(name, f"{why}; leave it out (or send {no_op[-1]!r})")
    if req.eta is not None and req.eta not in _ETA_DEFAULTS:
        raise BadInput("eta", "a non-default eta is not implemented; leave it out (0 for DDIM-style samplers, 1 for "
                              "ancestral ones: their defaults)")


def _unprocessable(field: str, message: str) -> BadInput:
    err = BadInput(field, message)
    err.status = 422  # A1111 answers unknown scripts with 422
    return err


def _on_grid(value: int, field: str) -> int:
    """The side A1111 gives: its latent is ``width // 8``, so 500 makes a 496-pixel image.
    (Local to this dialect for now; the others refuse sides off the 8-pixel grid.)"""
    if not 64 <= value <= 4096:
        raise BadInput(field, f"{value} is not allowed: use a side between 64 and 4096 pixels")
    return value // 8 * 8


def _seed(seed: int) -> int:
    return random_seed() if seed == -1 else seed


def txt2img_plan(req: Txt2ImgRequest, spec: ModelSpec, fmt: OutputFormat, max_pixels: int = 4096 * 4096) -> Plan:
    _refuse_unsupported(req)
    if "txt2img" not in spec.tasks:
        raise BadInput("sd_model_checkpoint", f"{spec.id} is an inpainting model: use /sdapi/v1/img2img with a "
                                              "mask, or switch checkpoint")
    entry = resolve_sampler(req.sampler_name, req.sampler_index, req.scheduler)
    width, height = _on_grid(req.width, "width"), _on_grid(req.height, "height")
    hires = _hires(req, entry) if req.enable_hr else None
    if req.enable_hr and (req.firstphase_width or req.firstphase_height):
        # A1111's old hires fields: width/height are the target, firstphase_* the first pass.
        width, height = (_on_grid(req.firstphase_width or req.width, "firstphase_width"),
                         _on_grid(req.firstphase_height or req.height, "firstphase_height"))
    control = units_of(req.alwayson_scripts, width, height, None, max_pixels)
    params = GenerationParams(
        model=spec.id, task="txt2img", prompt=req.prompt, negative_prompt=req.negative_prompt, prompt_syntax="a1111",
        width=width, height=height, steps=req.steps,
        guidance=req.cfg_scale, seed=_seed(req.seed),
        n=req.batch_size, scheduler=entry.name, output_format=fmt, control=control.units, inputs=control.inputs,
        ip_adapter=control.ip_adapter, tiling=bool(req.tiling), hires=hires, refiner=_refiner(req),
    )
    return Plan(params=params, n_iter=req.n_iter, sampler_label=a1111_label(entry.name), control=control)


_SAME = {"", "none", "use same sampler", "use same scheduler", "use same checkpoint"}


def _given(value: str | None) -> str | None:
    """A hires/refiner choice, or None for A1111's "use the same one" spellings."""
    return None if value is None or value.strip().lower() in _SAME else value.strip()


def _hires(req: Txt2ImgRequest, entry: SchedulerEntry) -> HiresFix:
    """``enable_hr`` and the ``hr_*`` fields as the engine's hires pass (A1111 1.10's
    StableDiffusionProcessingTxt2Img: hr_upscaler defaults to "Latent", 0 steps = the first
    pass's, denoising_strength 0.75)."""
    if not 0 < req.hr_scale <= MAX_HIRES_SCALE:
        raise BadInput("hr_scale", f"{req.hr_scale} is not allowed: use a scale above 0 and at most {MAX_HIRES_SCALE:g}")
    for name in ("hr_resize_x", "hr_resize_y"):
        if not 0 <= getattr(req, name) <= 4096:
            raise BadInput(name, f"{getattr(req, name)} is not allowed: use 0 (from hr_scale) or a side up to 4096")
    if not 0 <= req.hr_second_pass_steps <= 200:
        raise BadInput("hr_second_pass_steps", f"{req.hr_second_pass_steps} is not allowed: use 0 (same as steps) "
                                               "to 200")
    strength = DEFAULT_HIRES_STRENGTH if req.denoising_strength is None else req.denoising_strength
    if not 0 < strength <= 1:
        raise BadInput("denoising_strength", f"{strength} is not allowed: the hires pass needs a number above 0 "
                                             "and at most 1")
    sampler, schedule = _given(req.hr_sampler_name), _given(req.hr_scheduler)
    scheduler = None
    if sampler is not None or schedule is not None:
        try:
            scheduler = resolve_a1111(sampler or a1111_label(entry.name), schedule or req.scheduler,
                                      "hr_sampler_name").name
        except BadInput as e:
            raise e.renamed({"scheduler": "hr_scheduler"}) from None
        scheduler = None if scheduler == entry.name else scheduler
    checkpoint = _given(req.hr_checkpoint_name)
    fields: dict[str, Any] = {"scale": req.hr_scale, "resize_x": req.hr_resize_x, "resize_y": req.hr_resize_y}
    if req.firstphase_width or req.firstphase_height:
        fields = {"resize_x": _on_grid(req.width, "width"), "resize_y": _on_grid(req.height, "height")}
    return HiresFix(**fields, upscaler=req.hr_upscaler or "Latent", steps=req.hr_second_pass_steps or None,
                    strength=strength, scheduler=scheduler,
                    model=None if checkpoint is None else _HASH_SUFFIX.sub("", checkpoint),
                    prompt=req.hr_prompt or None, negative_prompt=req.hr_negative_prompt or None)


def _refiner(req: Txt2ImgRequest | Img2ImgRequest) -> Refiner | None:
    """``refiner_checkpoint`` + ``refiner_switch_at`` (A1111: the share of steps the base runs)."""
    name = _given(req.refiner_checkpoint)
    if name is None:
        return None
    switch = 0.8 if req.refiner_switch_at is None else req.refiner_switch_at
    if not 0 < switch < 1:
        raise BadInput("refiner_switch_at", f"{switch} is not allowed: use a share of the steps between 0 and 1")
    return Refiner(model=_HASH_SUFFIX.sub("", name), switch_at=switch)


def img2img_plan(req: Img2ImgRequest, spec: ModelSpec, fmt: OutputFormat, max_pixels: int,
                 upscalers: Sequence[str] = ()) -> Plan:
    """img2img, or inpaint when ``mask`` is given (A1111 polarity: white repaints); with the
    "SD upscale" script (``upscalers``: /sdapi/v1/upscalers' names, which its index picks),
    tiled img2img of the upscaled image (scripts.py)."""
    _refuse_unsupported(req)
    sd_upscale = sd_upscale_of(req.script_args, upscalers, req.batch_size) if is_sd_upscale(req.script_name) else None
    if sd_upscale is not None and req.mask:
        raise BadInput("mask", "the SD upscale script runs img2img: send no mask")
    if not req.init_images:
        raise NotFound("init_images: Init image not found; send one image as base64 in init_images")
    if len(req.init_images) > 1:
        raise BadInput("init_images", f"got {len(req.init_images)} images; sdserve takes one init image per "
                                      "request (use batch_size for several outputs)")
    if req.latent_mask:
        raise BadInput("latent_mask", "a separate latent mask is not supported; send only mask")
    if req.mask and req.inpainting_fill in (2, 3):
        raise BadInput("inpainting_fill", f"{req.inpainting_fill} (latent noise / latent nothing) is not "
                                          "implemented; send 0 (fill) or 1 (original)")
    w, h = _on_grid(req.width, "width"), _on_grid(req.height, "height")
    entry = resolve_sampler(req.sampler_name, req.sampler_index, req.scheduler)
    raw = decode_b64(req.init_images[0], "init_images[0]")
    img = decode_image(raw, "init_images[0]", max_pixels)
    # Mode 0 (and 3) leave the stretch to the engine, which makes the same resize for every
    # dialect; only the cropping modes change the pixels here.
    # (The SD upscale script takes the image as sent: its tiles are width x height.)
    init = raw if req.resize_mode in (0, 3) or sd_upscale else to_png(resize_image(req.resize_mode, img, w, h))
    task: Task = "img2img"
    mask_png: bytes | None = None
    crop: Crop | None = None
    if req.mask:
        m = decode_image(decode_b64(req.mask, "mask"), "mask", max_pixels, mode="RGBA")
        blur_x, blur_y = (req.mask_blur, req.mask_blur) if req.mask_blur is not None else (req.mask_blur_x, req.mask_blur_y)
        mask = prepare_mask(m, bool(req.inpainting_mask_invert), blur_x, blur_y, req.mask_round)
        if mask.size != img.size:
            mask = mask.resize(img.size, Image.Resampling.LANCZOS)  # A1111 scales the mask with the image
        task = "inpaint"
        region = crop_region(mask, req.inpaint_full_res_padding) if req.inpaint_full_res else None
        if region is not None:
            box = expand_crop_region(region, w, h, img.width, img.height)
            crop = Crop(original=img, box=box, overlay_mask=mask)
            init = to_png(img.crop(box).resize((w, h), Image.Resampling.LANCZOS))
            mask = mask.crop(box).resize((w, h), Image.Resampling.LANCZOS)
        elif req.resize_mode not in (0, 3):
            mask = resize_image(req.resize_mode, mask, w, h)
        if req.inpainting_fill == 0:  # "fill": start the masked area from its surroundings' colours
            start = decode_image(init, "init_images[0]", max_pixels)
            init = to_png(fill_masked(start, mask if mask.size == start.size else mask.resize(start.size)))
        mask_png = to_png(mask)
    # The units' images as sent (or the init image as sent, before any crop), as the extension.
    control = units_of(req.alwayson_scripts, w, h, raw, max_pixels)
    if crop is not None and (control.units or control.ip_adapter):
        raise BadInput("inpaint_full_res", "ControlNet with 'Only masked' inpainting is not supported; "
                                           "send inpaint_full_res: false")
    params = GenerationParams(
        model=spec.id, task=task, prompt=req.prompt, negative_prompt=req.negative_prompt, prompt_syntax="a1111",
        width=w, height=h,
        steps=req.steps, guidance=req.cfg_scale, strength=req.denoising_strength, seed=_seed(req.seed),
        n=req.batch_size, scheduler=entry.name, inputs=(*input_images(init=init, mask=mask_png), *control.inputs),
        output_format=fmt, control=control.units, ip_adapter=control.ip_adapter, tiling=bool(req.tiling),
        refiner=_refiner(req),
    )
    if sd_upscale is not None:  # one upscaled image per iteration; batch_size only sets the tiles' seeds
        params = params.model_copy(update={"n": 1, "sd_upscale": sd_upscale})
    return Plan(params=params, n_iter=req.n_iter, sampler_label=a1111_label(entry.name), crop=crop, control=control)


def finish_output(data: bytes, plan: Plan) -> bytes:
    """The image A1111 would return: an "only masked" crop pasted back into the original
    (with its infotext kept); anything else unchanged."""
    if plan.crop is None:
        return data
    text, _ = read_image_info(data)
    out = paste_back(decode_image(data, "output", 2**31), plan.crop)
    return encode_image(out, plan.params.output_format, text or "")


def generation_response(
    req: Txt2ImgRequest | Img2ImgRequest,
    plan: Plan,
    spec: ModelSpec,
    resolved: GenerationParams,
    images: Sequence[bytes],
    seeds: Sequence[int],
    started: float,
    warnings: Sequence[str] = (),
    annotate: Annotate | None = None,
) -> dict[str, Any]:
    """``{images, parameters, info}``: ``parameters`` echoes the request (seed -1 stays -1),
    ``info`` is a JSON string with the seeds actually used and one infotext per image, and
    ``warnings`` (how the request was read, e.g. a prompt cut to the text encoder's length)
    when there are any: A1111's own generation notes go to its UI, which an API caller lacks."""
    infotexts = [read_image_info(d)[0] or "" for d in images]
    provenance = parse_infotext(infotexts[0]) if infotexts and infotexts[0] else {}
    subseed = seeds[0] if req.subseed == -1 and seeds else req.subseed
    info: dict[str, Any] = {
        "prompt": req.prompt,
        "all_prompts": [req.prompt] * len(images),
        "negative_prompt": req.negative_prompt,
        "all_negative_prompts": [req.negative_prompt] * len(images),
        "seed": seeds[0] if seeds else resolved.seed,
        "all_seeds": list(seeds),
        "subseed": subseed,
        "all_subseeds": [subseed + i for i in range(len(seeds))],
        "subseed_strength": req.subseed_strength,
        "width": resolved.width,
        "height": resolved.height,
        "sampler_name": plan.sampler_label,
        "cfg_scale": resolved.guidance,
        "steps": resolved.steps,
        "batch_size": resolved.n,
        "restore_faces": bool(resolved.face_restoration),
        "face_restoration_model": resolved.face_restoration[0].model if resolved.face_restoration else None,
        "sd_model_name": resolved.model,
        "sd_model_hash": provenance.get("Model hash"),
        "sd_vae_name": provenance.get("VAE"),
        "sd_vae_hash": provenance.get("VAE hash"),
        "seed_resize_from_w": req.seed_resize_from_w,
        "seed_resize_from_h": req.seed_resize_from_h,
        "denoising_strength": resolved.strength if resolved.task != "txt2img" else req.denoising_strength,
        # hires fix / refiner fields, as A1111 lists them (the strength has its own key)
        "extra_generation_params": {k: v for k, v in infotext_fields(resolved.summary(), a1111_label)
                                    if k != "Denoising strength"},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": req.styles or [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(started)),
        "clip_skip": resolved.clip_skip,
        "is_using_inpainting_conditioning": spec.tasks == ("inpaint",),
        "version": f"sdserve {__version__}",
    }
    if warnings:
        info["warnings"] = list(warnings)
    if plan.control is not None and plan.control.detected_maps and images:
        maps = detected_maps(plan.control, resolved.width or 0, resolved.height or 0, plan.params.mask_image,
                             annotate)  # depth and pose maps: the engine's annotators
        images = [*images, *maps]  # the extension appends the control images it ran on
    parameters = req.model_dump()
    if isinstance(req, Img2ImgRequest) and not req.include_init_images:
        parameters["init_images"], parameters["mask"] = None, None
    return {
        "images": [base64.b64encode(d).decode("ascii") for d in images] if req.send_images else [],
        "parameters": parameters,
        "info": json.dumps(info),
    }


def in_dialect_terms(err: BadInput, names: dict[str, str] = ENGINE_FIELDS) -> BadInput:
    """``err`` with its field renamed from the engine's name to A1111's (also where its
    message repeats the name, as add-on lookups do)."""
    out = err.renamed(names)
    if out is not err and err.field in out.detail:
        out = type(out)(out.field, out.detail.replace(err.field, out.field))
        out.status = err.status
    return out


# -- listings ---------------------------------------------------------------------------

def sd_model_item(spec: ModelSpec, file: AddonFile | None = None) -> dict[str, Any]:
    """A catalog model by its id (clients send the title back as sd_model_checkpoint); a
    checkpoint file as A1111 lists it: ``name.safetensors [hash10]``, its SHA-256 and path."""
    if file is None:
        return {"title": spec.id, "model_name": spec.id, "hash": None, "sha256": None,
                "filename": spec.source.describe(), "config": None}
    sha = file.sha256()
    return {"title": f"{file.name}{'' if file.is_dir else file.path.suffix} [{sha[:10]}]", "model_name": file.name,
            "hash": sha[:10], "sha256": sha, "filename": str(file.path), "config": None}


def sampler_items() -> list[dict[str, Any]]:
    """A1111 1.10's samplers that run here (the rest are refused, see samplers.py), with
    its aliases and its options' default schedule."""
    return [{"name": s.label, "aliases": list(s.aliases), "options": {"scheduler": s.default} if s.default else {}}
            for s in SAMPLERS if s.engine]


def scheduler_items() -> list[dict[str, Any]]:
    """A1111 1.10's schedule types that run here, in its shape."""
    return [{"name": t.name, "label": t.label, "aliases": list(t.aliases) or None, "default_rho": t.default_rho,
             "need_inner_model": t.need_inner_model} for t in SCHEDULE_TYPES if t.engine or t.name == "automatic"]


def progress_body(
    *,
    step: int,
    total: int,
    job_no: int,
    job_count: int,
    started: float | None,
    now: float,
    job: str = "",
    timestamp: str = "",
    current_image: bytes | None = None,
    interrupted: bool = False,
    skipped: bool = False,
) -> dict[str, Any]:
    """``/sdapi/v1/progress`` with A1111's formula:
    progress = 0.01 + job_no/job_count + (step/total)/job_count, capped at 1; eta = elapsed/progress - elapsed."""
    progress = 0.0
    eta = 0.0
    if job_count > 0:
        progress = min(1.0, 0.01 + job_no / job_count + (step / total if total else 0.0) / job_count)
        elapsed = max(0.0, now - (started or now))
        eta = elapsed / progress - elapsed if progress > 0 else 0.0
    state = {"skipped": skipped, "interrupted": interrupted, "stopping_generation": False, "job": job,
             "job_count": job_count, "job_timestamp": timestamp or "0", "job_no": job_no,
             "sampling_step": step, "sampling_steps": total}
    image = base64.b64encode(current_image).decode("ascii") if current_image else None
    return {"progress": progress, "eta_relative": eta, "state": state, "current_image": image, "textinfo": None}
