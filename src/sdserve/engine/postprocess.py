"""Upscaling as a job step: A1111's extras semantics over ``engine.upscalers.upscale``.

Runs for an "upscale" job (its init image) and after a generation that asks for it
(ModelsLab's ``upscale``). The engine calls it under its lock, on its device and dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from .addon_files import AddonFolders
from .memory import AddonCache
from .params import UpscaleSettings
from .upscalers import upscale
from .upscalers.checks import plan_upscale

__all__ = ["apply_upscale"]


def apply_upscale(images: Sequence[Image.Image], s: UpscaleSettings, *, device: Any, dtype: Any,
                  addons: AddonFolders, max_pixels: int, store: AddonCache | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> list[Image.Image]:
    """Each image upscaled as ``s`` says: upscaler 1 to the planned size, upscaler 2 blended
    over it with its visibility, then centred on the target canvas when cropping."""
    out = []
    for im in images:
        plan = plan_upscale(im.width, im.height, s, max_pixels)
        if plan.skip:
            out.append(im)
            continue
        kw = dict(size=plan.scaled, device=device, dtype=dtype, addons=addons, max_pixels=max_pixels, store=store)
        [first] = upscale([im], s.upscaler, field="upscale.upscaler", on_progress=on_progress, **kw)
        if s.upscaler_2 is not None and s.upscaler_2 != "None" and s.upscaler_2_visibility > 0:
            [second] = upscale([im], s.upscaler_2, field="upscale.upscaler_2", **kw)
            first = Image.blend(first.convert("RGB"), second.convert("RGB"), s.upscaler_2_visibility)
        if plan.canvas is not None:
            canvas = Image.new("RGB", plan.canvas)
            canvas.paste(first, (plan.canvas[0] // 2 - first.width // 2, plan.canvas[1] // 2 - first.height // 2))
            first = canvas
        out.append(first)
    return out

