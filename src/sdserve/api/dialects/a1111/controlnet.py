"""A1111's ControlNet extension (Mikubill/sd-webui-controlnet) as sdserve control units.

Requests carry units in ``alwayson_scripts.controlnet.args`` (the script's name in any case,
as A1111 matches script titles); each unit is a dict with the extension's field names and
defaults (``internal_controlnet/external_code.py``): ``module`` "none", ``model`` "None",
``weight`` 1, ``resize_mode`` "Crop and Resize", ``processor_res``/``threshold_a``/``threshold_b``
-1 (the module's default), ``guidance_start`` 0, ``guidance_end`` 1, ``pixel_perfect`` false,
``control_mode`` "Balanced", ``enabled`` true. Enums take the extension's labels or numbers.
A unit without an image uses the img2img init image, as the extension does.

Pure translation (plus the preprocessing of ``/controlnet/detect``); no engine, no routes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdserve.engine.control import unit_field
from sdserve.engine.params import ControlMode, ControlUnit, InputImage, IPAdapterUnit, ResizeMode
from sdserve.engine.preprocessors import (
    ANNOTATORS,
    PREPROCESSORS,
    Annotate,
    canonical,
    check_preprocessor,
    control_image,
    preprocess,
)
from sdserve.errors import BadInput, ModelUnavailable
from sdserve.images import decode_image
from .inputs import decode_b64, to_png

__all__ = ["SCRIPT", "API_VERSION", "UnitArgs", "Units", "units_of", "module_list", "detect", "detected_maps",
           "script_names"]

SCRIPT = "controlnet"
# What GET /controlnet/version answers (external_code.get_api_version()).
API_VERSION = 2
_ARGS = "alwayson_scripts.controlnet.args"
# The extension's IP-Adapter modules (CLIP image encoders); units with one are IP-Adapters.
IP_ADAPTER_MODULES = ("ip-adapter-auto", "ip-adapter_clip_sd15", "ip-adapter_clip_sdxl", "ip-adapter_clip_sdxl_plus_vith")
_HASH = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]$")
_RESIZE: dict[str, ResizeMode] = {
    "0": "just_resize", "just resize": "just_resize",
    "1": "crop_and_resize", "crop and resize": "crop_and_resize", "inner fit (scale to fit)": "crop_and_resize",
    "scale to fit (inner fit)": "crop_and_resize",
    "2": "resize_and_fill", "resize and fill": "resize_and_fill", "outer fit (shrink to fit)": "resize_and_fill",
    "envelope (outer fit)": "resize_and_fill",
}
_MODES: dict[str, ControlMode] = {"0": "balanced", "balanced": "balanced", "1": "prompt",
                                  "my prompt is more important": "prompt", "2": "control",
                                  "controlnet is more important": "control"}
# Engine unit field -> the extension's name for it.
_FIELD_NAMES = {"model": "model", "preprocessor": "module", "image": "image", "weight": "weight",
                "control_mode": "control_mode", "guidance_start": "guidance_start", "guidance_end": "guidance_end"}


class UnitArgs(BaseModel):
    """One unit of ``alwayson_scripts.controlnet.args``, as the extension reads it."""

    model_config = ConfigDict(extra="ignore")

    enabled: bool = True
    module: str = "none"
    model: str = "None"
    weight: float = Field(1.0, ge=0, le=2)
    image: Any = None
    input_image: Any = None  # the extension's older name for image
    mask: str | None = None
    mask_image: str | None = None  # SD Forge's name for mask
    resize_mode: int | str = "Crop and Resize"
    low_vram: bool = False
    processor_res: int = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = Field(0.0, ge=0, le=1)
    guidance_end: float = Field(1.0, ge=0, le=1)
    guidance: float | None = None  # older name for guidance_end
    pixel_perfect: bool = False
    control_mode: int | str = "Balanced"
    save_detected_map: bool = True
    # Features sdserve does not have: refused when set (never silently dropped).
    advanced_weighting: list[float] | None = None
    effective_region_mask: Any = None
    ipadapter_input: Any = None


@dataclass
class Units:
    """What a request's ControlNet units become: engine units, their images (inputs of role
    "control"), each engine field's name in the request, and the maps to append to the reply."""

    units: tuple[ControlUnit, ...] = ()
    inputs: tuple[InputImage, ...] = ()
    fields: dict[str, str] = field(default_factory=dict)
    detected_maps: list[int] = field(default_factory=list)  # engine unit indexes whose map is returned
    # A unit with an ip-adapter module is the request's IP-Adapter (image prompt), not a ControlNet.
    ip_adapter: IPAdapterUnit | None = None


def script_names(scripts: dict[str, Any]) -> list[str]:
    """The always-on scripts a request names that sdserve does not run (all but ControlNet)."""
    return [name for name in scripts if name.lower() != SCRIPT]


def _enum(value: Any, table: dict[str, Any], field: str, what: str) -> Any:
    key = str(value).strip().lower()
    if key not in table:
        labels = sorted({k for k in table if not k.isdigit()})
        raise BadInput(field, f"{value!r} is not a {what}; use one of {', '.join(labels)} (or 0-2)")
    return table[key]


def _image(raw: Any, mask: str | None, field: str) -> tuple[str | None, str | None]:
    """(image, mask) base64 strings from any of the extension's image shapes."""
    if isinstance(raw, dict):
        return raw.get("image"), raw.get("mask") or mask
    if isinstance(raw, (list, tuple)):
        if len(raw) == 2 and all(isinstance(x, str) or x is None for x in raw):
            return raw[0], raw[1] or mask
        if len(raw) == 1 and isinstance(raw[0], dict):
            return raw[0].get("image"), raw[0].get("mask") or mask
        raise BadInput(field, "several input images per unit (multi-inputs) are not supported; send one image")
    if raw is None or isinstance(raw, str):
        return raw, mask
    raise BadInput(field, "must be a base64 image, {\"image\": ..., \"mask\": ...} or [image, mask]")


def _pixel_perfect(size: tuple[int, int], width: int, height: int, resize: ResizeMode) -> int:
    # The extension's pixel_perfect_resolution: the preprocessor works at the resolution the
    # image will have once fitted to the output, so no detail is lost or invented.
    raw_w, raw_h = size
    k = (min if resize == "resize_and_fill" else max)(height / raw_h, width / raw_w)
    return int(round(k * min(raw_w, raw_h)))


def units_of(scripts: dict[str, Any], width: int, height: int, init: bytes | None, max_pixels: int) -> Units:
    """The enabled units of a request's ``alwayson_scripts`` as engine units; BadInput naming
    ``alwayson_scripts.controlnet.args[i].<field>`` for what the extension's schema refuses."""
    entry = next((v for k, v in scripts.items() if k.lower() == SCRIPT), None)
    if entry is None:
        return Units()
    args = entry.get("args") if isinstance(entry, dict) else None
    if not isinstance(args, list):
        raise BadInput("alwayson_scripts.controlnet", "must be {\"args\": [unit, ...]}")
    out = Units()
    units: list[ControlUnit] = []
    for j, raw in enumerate(args):
        where = f"{_ARGS}[{j}]"
        if not isinstance(raw, dict):
            raise BadInput(where, "each unit is an object with the extension's field names (module, model, image, ...)")
        try:
            u = UnitArgs.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            raise BadInput(f"{where}.{'.'.join(str(p) for p in err['loc'])}", err["msg"]) from None
        if not u.enabled:
            continue
        i = len(units)
        for name in ("advanced_weighting", "effective_region_mask", "ipadapter_input"):
            if getattr(u, name) is not None:
                raise BadInput(f"{where}.{name}", "is not supported by sdserve; leave it out")
        model = _HASH.sub("", u.model.strip())
        if model.lower() in ("", "none"):
            raise BadInput(f"{where}.model", "an enabled unit needs a ControlNet model (GET /controlnet/model_list)")
        b64, mask = _image(u.image if u.image is not None else u.input_image, u.mask or u.mask_image, f"{where}.image")
        if mask:
            raise BadInput(f"{where}.mask", "per-unit masks are not supported; send the img2img mask (mask)")
        data = decode_b64(b64, f"{where}.image") if b64 else init
        if data is None:
            raise BadInput(f"{where}.image", "this unit has no image (and txt2img has no init image to use)")
        if u.module.lower().startswith(("ip-adapter", "ip_adapter")):
            _ip_adapter_unit(out, u, model, data, where)
            continue
        resize = _enum(u.resize_mode, _RESIZE, f"{where}.resize_mode", "resize mode")
        res = u.processor_res if 64 <= u.processor_res <= 4096 else 512
        if u.pixel_perfect:
            res = _pixel_perfect(decode_image(data, f"{where}.image", max_pixels).size, width, height, resize)
        units.append(ControlUnit(
            model=model, weight=u.weight, guidance_start=u.guidance_start,
            guidance_end=u.guidance if u.guidance is not None else u.guidance_end,
            control_mode=_enum(u.control_mode, _MODES, f"{where}.control_mode", "control mode"),
            preprocessor=u.module, resize_mode=resize, processor_res=max(64, min(res, 4096)),
            threshold_a=None if u.threshold_a == -1 else u.threshold_a,
            threshold_b=None if u.threshold_b == -1 else u.threshold_b,
        ))
        out.inputs += (InputImage(role="control", index=i, data=data),)
        out.fields.update({unit_field(i, k): f"{where}.{v}" for k, v in _FIELD_NAMES.items()})
        if u.save_detected_map and u.module.lower() != "none":
            out.detected_maps.append(i)
    out.units = tuple(units)
    out.fields["control"] = _ARGS
    return out


def _ip_adapter_unit(out: Units, u: UnitArgs, model: str, data: bytes, where: str) -> None:
    """An ip-adapter unit: the IP-Adapter ``model`` at ``weight``, its image the prompt. The
    extension's CLIP preprocessors are the adapter's own image encoder here."""
    if out.ip_adapter is not None:
        raise BadInput(f"{where}.module", "one IP-Adapter unit per request is supported")
    if u.guidance_start != 0 or (u.guidance if u.guidance is not None else u.guidance_end) != 1:
        raise BadInput(f"{where}.guidance_start", "an IP-Adapter applies to every step here; send 0 and 1")
    out.ip_adapter = IPAdapterUnit(model=model, scale=u.weight)
    out.inputs += (InputImage(role="ip_adapter", data=data),)
    out.fields.update({"ip_adapter.model": f"{where}.model", "ip_adapter.image": f"{where}.image"})


# -- /controlnet/* ----------------------------------------------------------------------

_RES_SLIDER = {"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048}


def module_list(alias_names: bool = False, annotators: list[str] | None = None) -> dict[str, Any]:
    """``/controlnet/module_list``: the preprocessors that run here, with their sliders. The
    extension lists every module (it downloads an annotator on first use); requests never
    download here, so an annotator is listed when its models are (``annotators``)."""
    detail = {}
    for name, p in PREPROCESSORS.items():
        sliders: list[dict[str, Any]] = [_RES_SLIDER] if p.rescales else []
        sliders += [{"name": label, "value": default, "min": 0, "max": 255 if "Threshold" in label else 64}
                    for label, default in p.params]
        detail[name] = {"model_free": True, "sliders": sliders}
    installed = [name for name in ANNOTATORS if name in (annotators or [])]
    for name in installed:
        detail[name] = {"model_free": False, "sliders": [_RES_SLIDER] if ANNOTATORS[name].rescales else []}
    for name in IP_ADAPTER_MODULES:  # the IP-Adapter's own image encoder does their work
        detail[name] = {"model_free": False, "sliders": []}
    return {"module_list": [*PREPROCESSORS, *installed, *IP_ADAPTER_MODULES], "module_detail": detail}


def detect(module: str, images: list[str], processor_res: int, threshold_a: float, threshold_b: float,
           masks: list[str], max_pixels: int, annotate: Annotate | None = None) -> list[bytes]:
    """``/controlnet/detect``: each image through ``module`` (PNG bytes); an annotator module
    (depth, pose) runs through ``annotate`` (the engine's models)."""
    check_preprocessor(module, "controlnet_module")
    if canonical(module) in ANNOTATORS and annotate is None:
        raise BadInput("controlnet_module", f"{module} runs a network this server does not serve here")
    if not images:
        raise BadInput("controlnet_input_images", "No image selected")
    res = processor_res if 64 <= processor_res <= 4096 else 512
    a, b = (None if threshold_a == -1 else threshold_a), (None if threshold_b == -1 else threshold_b)
    out = []
    for k, text in enumerate(images):
        img = decode_image(decode_b64(text, f"controlnet_input_images[{k}]"), f"controlnet_input_images[{k}]",
                           max_pixels)
        try:
            result = preprocess(module, img, res, a, b, annotate)
        except BadInput as e:  # an annotator whose models are missing: named as this route's field
            raise e.renamed({"preprocessor": "controlnet_module"}) from None
        if module in ("inpaint", "inpaint_only"):
            if k >= len(masks):
                raise BadInput("controlnet_masks", f"Preprocessor {module} requires `controlnet_masks` param.")
            mask = decode_image(decode_b64(masks[k], f"controlnet_masks[{k}]"), f"controlnet_masks[{k}]",
                                max_pixels, "L").resize(result.size, Image.Resampling.NEAREST)
            result = result.convert("RGBA")
            result.putalpha(mask.point(lambda v: 0 if v > 127 else 255))
        out.append(to_png(result))
    return out


def detected_maps(units: Units, width: int, height: int, mask: bytes | None,
                  annotate: Annotate | None = None) -> list[bytes]:
    """The control images the units ran on (PNG), which the extension appends to ``images``
    unless a unit says ``save_detected_map: false``; an annotator's map is made again through
    ``annotate`` (the same image and model: the same map)."""
    m = decode_image(mask, "mask", 2**31, "L") if mask is not None else None
    out = []
    for i in units.detected_maps:
        u = units.units[i]
        img = decode_image(units.inputs[i].data, unit_field(i, "image"), 2**31)
        try:
            out.append(to_png(control_image(u.preprocessor, img, (width, height), u.resize_mode, u.processor_res,
                                            u.threshold_a, u.threshold_b, m, annotate)))
        except ModelUnavailable:  # an annotator's map has no call here (Ray): the images stand
            continue
    return out
