"""Outpainting: an image extended by margins and the new border inpainted (torch-free).

``prepare`` turns an outpaint request into an inpaint job: the image is padded (the margins
filled from its own edges, then blurred, so the loop starts from colours that continue the
picture), and the mask covers the new border plus ``overlap`` pixels of the original on each
extended side. After the loop the engine puts the original pixels back wherever the mask
did not reach (:func:`keep_original`), so outside the overlap the picture is exactly the one
sent. Being an inpaint job, it batches with any inpaint request of the same settings.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Outpaint", "pad_and_mask", "keep_original", "padded_size", "MAX_MARGIN", "MAX_OVERLAP"]

# A margin alone may not exceed the largest side the engine makes; the padded image is
# checked against the side and pixel limits in prepare (a 4xx naming the margin).
MAX_MARGIN = 4096
MAX_OVERLAP = 256
# Gaussian radius of the fill, as a share of the wider margin: wide enough that the stretched
# edge rows become a soft continuation, not streaks.
_BLUR_SHARE = 0.25


class Outpaint(BaseModel):
    """Pixels added on each side of the input image, and how far the repaint reaches back
    into it (only on the sides that grow)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    left: int = Field(default=0, ge=0, le=MAX_MARGIN)
    right: int = Field(default=0, ge=0, le=MAX_MARGIN)
    top: int = Field(default=0, ge=0, le=MAX_MARGIN)
    bottom: int = Field(default=0, ge=0, le=MAX_MARGIN)
    overlap: int = Field(default=0, ge=0, le=MAX_OVERLAP)


def padded_size(o: Outpaint, width: int, height: int) -> tuple[int, int]:
    """(width, height) of an image of this size once padded."""
    return width + o.left + o.right, height + o.top + o.bottom


def pad_and_mask(image: Image.Image, o: Outpaint) -> tuple[Image.Image, Image.Image]:
    """The padded image (margins filled from the edges, blurred) and its mask (white = repaint:
    the margins and ``overlap`` pixels inside each side that grew)."""
    rgb = np.asarray(image.convert("RGB"))
    padded = np.pad(rgb, ((o.top, o.bottom), (o.left, o.right), (0, 0)), mode="edge")
    w, h = padded_size(o, image.width, image.height)
    canvas = Image.fromarray(padded)
    border = Image.new("L", (w, h), 255)
    border.paste(0, (o.left, o.top, o.left + image.width, o.top + image.height))
    widest = max(o.left, o.right, o.top, o.bottom)
    if widest:
        blurred = canvas.filter(ImageFilter.GaussianBlur(max(1.0, widest * _BLUR_SHARE)))
        canvas = Image.composite(blurred, canvas, border)  # the original itself stays sharp
    mask = Image.new("L", (w, h), 255)
    keep = (o.left + (o.overlap if o.left else 0), o.top + (o.overlap if o.top else 0),
            o.left + image.width - (o.overlap if o.right else 0), o.top + image.height - (o.overlap if o.bottom else 0))
    if keep[2] > keep[0] and keep[3] > keep[1]:
        mask.paste(0, keep)
    return canvas, mask


def keep_original(images: list[Image.Image], original: Image.Image, mask: Image.Image) -> list[Image.Image]:
    """Each output with the padded original's pixels wherever the mask keeps them (black)."""
    out = []
    for im in images:
        base = original if original.size == im.size else original.resize(im.size, Image.Resampling.LANCZOS)
        m = mask if mask.size == im.size else mask.resize(im.size, Image.Resampling.NEAREST)
        out.append(Image.composite(im.convert("RGB"), base.convert("RGB"), m))
    return out
