"""ModelsLab's ControlNet fields as sdserve control units (pure translation).

``controlnet_model`` names ControlNets in the server's ``ControlNet`` folder; several are a
comma list, and ``controlnet_type``, ``controlnet_conditioning_scale`` and ``control_image``
then give one value per model (or one for all). ``auto_hint: "yes"`` turns the image into the
type's hint (canny edges, a scribble, line art, ...); otherwise the image is the hint as sent.
``guess_mode: "yes"`` is the ControlNet's guess mode ("ControlNet is more important").

The hint image is ``control_image``, else ``init_image``; on the ``/controlnet`` endpoint an
``init_image`` with a separate ``control_image`` is the img2img start (with ``mask_image``:
inpainting), and an ``init_image`` alone is only the hint (text to image guided by it).
"""

from __future__ import annotations

import re

from sdserve.engine.control import unit_field
from sdserve.engine.params import ControlUnit, InputImage, Task
from sdserve.errors import BadInput
from .protocol import GenerateRequest

__all__ = ["split_list", "control_sources", "control_task", "control_units", "fields"]

# ModelsLab's controlnet_type -> the preprocessor that makes that hint (auto_hint).
_TYPES = {"canny": "canny", "scribble": "scribble_xdog", "lineart": "lineart_standard", "tile": "tile_resample",
          "inpaint": "inpaint", "blur": "blur_gaussian", "threshold": "threshold", "invert": "invert",
          "depth": "depth_anything_v2", "openpose": "openpose", "softedge": "softedge_hed", "mlsd": "mlsd",
          "normal": "normal_bae", "segmentation": "seg_ofade20k", "shuffle": "shuffle", "lineart_anime": "lineart_anime"}
# A data: URI holds a comma itself: split image lists only before a new item.
_ITEM = re.compile(r",\s*(?=data:|https?://)")


def split_list(text: str | None) -> list[str]:
    """A comma list (names, numbers) as its stripped items; [] when unset."""
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def control_sources(req: GenerateRequest) -> list[str]:
    """The hint image sources to fetch or decode, in unit order (one may serve all units)."""
    if req.control_image and req.control_image.strip():
        return [t.strip() for t in _ITEM.split(req.control_image.strip()) if t.strip()]
    return [req.init_image.strip()] if req.init_image and req.init_image.strip() else []


def control_task(req: GenerateRequest) -> Task:
    """The task of a ``/controlnet`` request (module docstring)."""
    has_init = bool(req.init_image and req.init_image.strip())
    if req.mask_image and req.mask_image.strip():
        return "inpaint"
    return "img2img" if has_init and bool(req.control_image and req.control_image.strip()) else "txt2img"


def _per_unit(values: list[str], n: int, field: str) -> list[str]:
    if len(values) in (0, 1):
        return values * n if values else []
    if len(values) != n:
        raise BadInput(field, f"gives {len(values)} values for {n} ControlNet models; give one, or one per model")
    return values


def control_units(req: GenerateRequest, images: list[bytes]) -> tuple[tuple[ControlUnit, ...], tuple[InputImage, ...]]:
    """The units and their images (``images``: the fetched ``control_sources``)."""
    models = split_list(req.controlnet_model)
    if not models:
        for name in ("controlnet_type", "control_image", "controlnet_conditioning_scale"):
            if getattr(req, name) not in (None, ""):
                raise BadInput(name, "needs controlnet_model (the ControlNet to apply)")
        return (), ()
    n = len(models)
    types = _per_unit(split_list(req.controlnet_type), n, "controlnet_type")
    if req.auto_hint and not types:
        raise BadInput("auto_hint", "needs controlnet_type (which hint to make: canny, scribble, lineart, ...)")
    scales = _per_unit(split_list(str(req.controlnet_conditioning_scale or "")), n, "controlnet_conditioning_scale")
    if not images:
        raise BadInput("control_image", "ControlNet needs a hint image: send control_image (or init_image)")
    imgs = images * n if len(images) == 1 else images
    if len(imgs) != n:
        raise BadInput("control_image", f"gives {len(images)} images for {n} ControlNet models")
    units = []
    for i, model in enumerate(models):
        pre = "none"
        if req.auto_hint:
            kind = types[i].lower()
            if kind not in _TYPES:
                raise BadInput("controlnet_type", f"unknown type {types[i]!r}; one of {', '.join(_TYPES)}")
            pre = _TYPES[kind]
        try:
            weight = float(scales[i]) if scales else 1.0
        except ValueError:
            raise BadInput("controlnet_conditioning_scale", f"{scales[i]!r} is not a number") from None
        if not 0 <= weight <= 2:
            raise BadInput("controlnet_conditioning_scale", f"{weight} is out of range: use 0 to 2")
        units.append(ControlUnit(model=model, weight=weight, preprocessor=pre,
                                 control_mode="control" if req.guess_mode else "balanced"))
    inputs = tuple(InputImage(role="control", index=i, data=d) for i, d in enumerate(imgs))
    return tuple(units), inputs


def fields(n: int) -> dict[str, str]:
    """Engine unit fields -> ModelsLab's, for errors."""
    names = {"model": "controlnet_model", "preprocessor": "controlnet_type", "image": "control_image",
             "weight": "controlnet_conditioning_scale", "control_mode": "guess_mode"}
    return {"control": "controlnet_model",
            **{unit_field(i, k): v for i in range(n) for k, v in names.items()}}

