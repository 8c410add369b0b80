"""Resolving and checking a request before it is queued, without torch.

The job service calls this (through the engine) at submit time; a Ray API replica, which
runs no model, calls it directly so that bad input is rejected where the request arrives.
"""

from __future__ import annotations

import math

from ..errors import BadInput
from .catalog import Catalog
from .params import GenerationParams
from .schedulers import get_scheduler

__all__ = ["prepare"]


def _check_text(field: str, text: str) -> None:
    """Text that every store and file format can hold: no NUL (PostgreSQL text refuses it)
    and no unpaired UTF-16 surrogate (not encodable as UTF-8, e.g. JSON "\\ud83e" alone)."""
    if "\x00" in text:
        raise BadInput(field, f"contains a NUL character (\\u0000) at position {text.index(chr(0))}; remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadInput(field, f"contains an unpaired UTF-16 surrogate at position {e.start}; send valid Unicode "
                              "(an emoji is a surrogate pair or the character itself)") from None


def prepare(catalog: Catalog, params: GenerationParams) -> GenerationParams:
    """Resolve defaults and check what any dialect must satisfy; raises BadInput."""
    spec = catalog.get(params.model)
    spec.check_task(params.task)
    p = params.resolve(spec)  # idempotent: fills only what is still None
    for name in ("prompt", "negative_prompt"):
        _check_text(name, getattr(p, name))
    for name in ("width", "height"):
        v = getattr(p, name)
        if v % 8 or not 64 <= v <= 4096:
            raise BadInput(name, f"{v} is not allowed: use a multiple of 8 between 64 and 4096")
    if not (p.steps and 1 <= p.steps <= 200):
        raise BadInput("steps", f"{p.steps} is not allowed: use 1 to 200")
    if p.guidance is None or not math.isfinite(p.guidance) or not 0 <= p.guidance <= 50:
        raise BadInput("guidance", f"{p.guidance} is not allowed: use a number from 0 to 50")
    if p.strength is None or not math.isfinite(p.strength) or not 0 < p.strength <= 1:
        raise BadInput("strength", f"{p.strength} is not allowed: use a number above 0 and at most 1")
    if p.task != "txt2img" and int(p.steps * p.strength) < 1:
        # diffusers runs int(steps * strength) steps of an img2img/inpaint schedule (same
        # expression, same rounding); zero would crash the pipeline with a reshape error.
        raise BadInput("strength", f"{p.strength} with {p.steps} steps leaves no denoising step to run: "
                                   "raise strength or steps so that strength x steps is at least 1")
    get_scheduler(p.scheduler or "")
    if p.task != "txt2img" and p.init_image is None:
        raise BadInput("image", f"task {p.task} needs an input image")
    if p.task == "inpaint" and p.mask_image is None:
        raise BadInput("mask", "inpainting needs a mask (white = repaint, black = keep)")
    return p
