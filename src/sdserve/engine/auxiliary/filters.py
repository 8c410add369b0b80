"""What a flagged image becomes (ModelsLab's ``safety_checker_type``): black (upstream's
"replaced by a blank image"), a heavy blur or a coarse pixelation. Pillow only."""

from __future__ import annotations

from typing import get_args

from PIL import Image, ImageFilter

from ..params import SafetyMode

__all__ = ["SAFETY_MODES", "obscure"]

SAFETY_MODES: tuple[SafetyMode, ...] = get_args(SafetyMode)


def obscure(image: Image.Image, mode: SafetyMode) -> Image.Image:
    """``image`` made unrecognisable, same size and mode."""
    w, h = image.size
    if mode == "black":
        return Image.new(image.mode, image.size)
    if mode == "blur":
        # A radius of an eighth of the shorter side leaves colour fields, no shapes.
        return image.filter(ImageFilter.GaussianBlur(radius=max(4, min(w, h) // 8)))
    # pixelate: 16 blocks along the shorter side, scaled back up without smoothing.
    block = max(1, min(w, h) // 16)
    small = image.resize((max(1, w // block), max(1, h // block)), Image.Resampling.BOX)
    return small.resize(image.size, Image.Resampling.NEAREST)
