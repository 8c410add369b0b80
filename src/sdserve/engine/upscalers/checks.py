"""Checking upscale settings and planning the output size, without torch.

``prepare`` calls these at submit time (a Ray API replica too), so a scale or size past
the limits is a 4xx before anything is queued. Field names are the engine's
(``upscale.scale``, ``upscale.width``, ...); each dialect renames them into its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from ...errors import BadInput
from ..addon_files import AddonFolders
from ..catalog import Catalog
from ..params import GenerationParams, UpscaleSettings
from . import MAX_SCALE, find_upscaler

__all__ = ["UpscalePlan", "plan_upscale", "check_upscale", "check_upscaler_names", "prepare_upscale"]

# Target sides A1111's extras accept ("Scale to" slider: 64 to 8192).
MAX_TARGET_SIDE = 8192


@dataclass(frozen=True)
class UpscalePlan:
    """What an upscale of one image does: resize to ``scaled``, then (A1111 "crop to fit")
    centre that on a ``canvas`` of the asked size; ``size`` is the output's."""

    scaled: tuple[int, int]
    canvas: tuple[int, int] | None
    skip: bool  # upscaler "None": the image is left as it is (A1111's extras)

    @property
    def size(self) -> tuple[int, int]:
        return self.canvas or self.scaled


def plan_upscale(width: int, height: int, s: UpscaleSettings, max_pixels: int) -> UpscalePlan:
    """The plan for a ``width`` x ``height`` image; BadInput past the limits."""
    if s.upscaler == "None":
        return UpscalePlan((width, height), None, True)
    if (s.width is None) != (s.height is None):
        missing = "upscale.height" if s.height is None else "upscale.width"
        raise BadInput(missing, "a target size needs both width and height")
    if s.width is not None and s.height is not None:
        for name, v in (("upscale.width", s.width), ("upscale.height", s.height)):
            if not 1 <= v <= MAX_TARGET_SIDE:
                raise BadInput(name, f"{v} is not allowed: use 1 to {MAX_TARGET_SIDE}")
        by = max(s.width / width, s.height / height)
    else:
        if s.scale is None or not math.isfinite(s.scale) or not 0 < s.scale <= MAX_SCALE:
            raise BadInput("upscale.scale", f"{s.scale} is not allowed: use a factor above 0 and at most {MAX_SCALE:g}")
        by = s.scale
    if s.upscaler_2 not in (None, "None") and not 0 <= s.upscaler_2_visibility <= 1:
        raise BadInput("upscale.upscaler_2_visibility", f"{s.upscaler_2_visibility} is not allowed: use 0 to 1")
    if not 1 <= s.grid <= 64:
        raise BadInput("upscale.grid", f"{s.grid} is not allowed: use 1 to 64")
    scaled = (max(1, int(width * by // s.grid * s.grid)), max(1, int(height * by // s.grid * s.grid)))
    canvas = (s.width, s.height) if s.crop and s.width is not None and s.height is not None else None
    plan = UpscalePlan(scaled, canvas, False)
    for w, h in {scaled, plan.size}:
        if w * h > max_pixels:
            field = "upscale.width" if s.width is not None else "upscale.scale"
            raise BadInput(field, f"the result would be {w}x{h} ({w * h} pixels), past this server's limit of "
                                  f"{max_pixels} pixels per image; ask for a smaller size")
    return plan


def check_upscale(p: GenerationParams, max_pixels: int) -> None:
    """An upscale after a generation: its output fits the limits."""
    if p.upscale is not None and p.width and p.height:
        plan_upscale(p.width, p.height, p.upscale, max_pixels)


def check_upscaler_names(p: GenerationParams, addons: AddonFolders) -> None:
    """The upscalers ``p`` names exist (BadInput naming ``upscale.upscaler``/``_2`` if not)."""
    if p.upscale is None:
        return
    find_upscaler(addons, p.upscale.upscaler, field="upscale.upscaler")
    second = p.upscale.upscaler_2
    if second is not None and second != "None" and p.upscale.upscaler_2_visibility > 0:
        find_upscaler(addons, second, field="upscale.upscaler_2")


def prepare_upscale(catalog: Catalog, params: GenerationParams,
                    max_pixels: int) -> tuple[GenerationParams, dict[str, Image.Image]]:
    """An "upscale" job resolved: its input decoded and its output size planned (the job
    records it as width x height). The model stays the request's (or the default) only so
    the job has one; no model is loaded for it."""
    from ..prepare import decode_inputs

    s = params.upscale
    if s is None:
        raise BadInput("upscale", "an upscale job needs its settings (upscaler, scale or size)")
    if params.init_image is None:
        raise BadInput("image", "an upscale job needs an input image")
    if params.mask_image is not None:
        raise BadInput("mask", "an upscale job takes no mask")
    if params.tiling:
        raise BadInput("tiling", "an upscale job has no denoising loop to tile")
    if params.n != 1:
        raise BadInput("n", "an upscale job makes one image per input image")
    images = decode_inputs(params, max_pixels)
    img = images["init"]
    plan = plan_upscale(img.width, img.height, s, max_pixels)
    w, h = plan.size
    p = params.model_copy(update={"model": catalog.get(params.model).id, "task": "upscale", "width": w,
                                  "height": h, "seed": 0 if params.seed is None else params.seed})
    return p, {"init": img}
