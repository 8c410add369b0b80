"""Preparing img2img inputs the way A1111 does (modules/processing.py, images.py, masking.py):
base64 decoding, resize modes, mask polarity and blur, and the "only masked" crop that is
inpainted at full resolution and pasted back. Pure Pillow, so it is unit-tested without an engine.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageFilter, ImageOps

from sdserve.errors import BadInput
from sdserve.images import decode_base64

__all__ = [
    "decode_b64",
    "binary_mask",
    "prepare_mask",
    "resize_image",
    "crop_region",
    "expand_crop_region",
    "Crop",
    "paste_back",
    "to_png",
]


def decode_b64(text: str, field: str) -> bytes:
    """Bytes of a base64 string or ``data:...;base64,`` URI; BadInput naming ``field`` otherwise."""
    text = text.strip()
    if text.startswith(("http://", "https://")):
        raise BadInput(field, "image URLs are not fetched by this API; send the image as base64 or a data: URI")
    return decode_base64(text, field)


def to_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def binary_mask(mask: Image.Image, round_: bool = True) -> Image.Image:
    """A1111's ``create_binary_mask``: an RGBA mask with any transparency is read by its alpha
    (alpha > 128 repaints, the opposite of OpenAI); anything else by brightness (white repaints)."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        alpha = mask.getchannel("A")
        return alpha.point(lambda a: 255 if a > 128 else 0) if round_ else alpha
    return mask.convert("L")


def prepare_mask(mask: Image.Image, invert: bool, blur_x: int, blur_y: int, round_: bool = True) -> Image.Image:
    """Binarise, optionally invert (``inpainting_mask_invert``), then Gaussian-blur the edges."""
    m = binary_mask(mask, round_)
    if invert:
        m = ImageOps.invert(m)
    if blur_x or blur_y:
        m = m.filter(ImageFilter.GaussianBlur((blur_x, blur_y)))
    return m


# (blur radius, times) for inpainting_fill 0 ("fill"): ever finer blurs of the kept pixels,
# stacked, so the masked area starts from the colours around it rather than from its own.
_FILL_PASSES = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's inpainting_fill 0 ("fill"): the masked area (white) replaced by the blurred
    colours of what surrounds it before the image is encoded; kept pixels unchanged."""
    keep = ImageOps.invert(mask.convert("L"))
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    out = Image.new("RGBA", image.size)
    for radius, times in _FILL_PASSES:
        layer = (kept.filter(ImageFilter.GaussianBlur(radius)) if radius else kept).convert("RGBA")
        for _ in range(times):
            out.alpha_composite(layer)
    return out.convert("RGB")


def resize_image(mode: int, im: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's ``images.resize_image``: 0/3 stretch, 1 crop to fill, 2 fit and fill the bars
    with the stretched edge rows/columns."""
    if mode in (0, 3):
        return im.resize((width, height), Image.Resampling.LANCZOS)
    ratio, src_ratio = width / height, im.width / im.height
    if mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = im.resize((src_w, src_h), Image.Resampling.LANCZOS)
        res = Image.new(im.mode, (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = im.resize((src_w, src_h), Image.Resampling.LANCZOS)
    res = Image.new(im.mode, (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill = height // 2 - src_h // 2
        if fill > 0:
            res.paste(resized.resize((width, fill), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(resized.resize((width, fill), box=(0, resized.height, width, resized.height)),
                      box=(0, fill + src_h))
    elif ratio > src_ratio:
        fill = width // 2 - src_w // 2
        if fill > 0:
            res.paste(resized.resize((fill, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(resized.resize((fill, height), box=(resized.width, 0, resized.width, height)),
                      box=(fill + src_w, 0))
    return res


def crop_region(mask: Image.Image, pad: int) -> tuple[int, int, int, int] | None:
    """Bounding box of the repaint area grown by ``pad`` and clipped to the image; None if empty."""
    box = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height)


def expand_crop_region(region: tuple[int, int, int, int], pw: int, ph: int, iw: int, ih: int) -> tuple[int, int, int, int]:
    """Grow ``region`` to the processing aspect ratio ``pw:ph`` inside an ``iw`` x ``ih`` image
    (A1111's ``masking.expand_crop_region``), so the crop is not distorted when resized."""
    x1, y1, x2, y2 = region
    if (x2 - x1) / (y2 - y1) > pw / ph:
        y1, y2 = _grow(y1, y2, int((x2 - x1) / (pw / ph) - (y2 - y1)), ih)
    else:
        x1, x2 = _grow(x1, x2, int((y2 - y1) * (pw / ph) - (x2 - x1)), iw)
    return x1, y1, x2, y2


def _grow(lo: int, hi: int, diff: int, limit: int) -> tuple[int, int]:
    """Widen ``[lo, hi)`` by ``diff`` around its centre, shifted back inside ``[0, limit]``."""
    lo -= diff // 2
    hi += diff - diff // 2
    if hi >= limit:
        lo -= hi - limit
        hi = limit
    if lo < 0:
        hi -= lo
        lo = 0
    return lo, min(hi, limit)


@dataclass(frozen=True)
class Crop:
    """Where an "only masked" inpaint goes back: the full original, the box, and the blurred
    mask that blends the repainted crop into it."""

    original: Image.Image
    box: tuple[int, int, int, int]
    overlay_mask: Image.Image


def paste_back(output: Image.Image, crop: Crop) -> Image.Image:
    """The original image with ``output`` (the inpainted crop) resized into ``crop.box``,
    visible only where the mask repaints."""
    x1, y1, x2, y2 = crop.box
    base = crop.original.convert("RGB")
    pasted = base.copy()
    pasted.paste(output.convert("RGB").resize((x2 - x1, y2 - y1), Image.Resampling.LANCZOS), (x1, y1))
    return Image.composite(pasted, base, crop.overlay_mask)
