"""Decoding caller images safely and encoding outputs with their parameters embedded.

Pillow only, so every layer may use it: adapters validate uploads here (naming the field
on failure) and the service encodes results here.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import BadInput, PayloadTooLarge

__all__ = ["decode_image", "decode_base64", "encode_image", "CONTENT_TYPES", "sniff_content_type", "infotext"]

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_EXIF_USER_COMMENT = 0x9286
_EXIF_IFD = 0x8769


def decode_base64(text: str, field: str) -> bytes:
    """Bytes of bare base64 or a ``data:<type>;base64,`` URI (whitespace and line breaks
    allowed, as clients wrap long strings); BadInput naming ``field`` otherwise."""
    text = text.strip()
    if text.startswith("data:"):
        head, sep, tail = text.partition(",")
        if not sep or ";base64" not in head:
            raise BadInput(field, "data URI must be base64 encoded (expected 'data:image/png;base64,...')")
        text = tail
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(field, "is not valid base64") from None


def decode_image(data: bytes, field: str, max_pixels: int, mode: str = "RGB") -> Image.Image:
    """Decode ``data`` into a fully loaded image in ``mode`` or raise BadInput naming ``field``.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing. Animated images give their first frame; palette,
    CMYK, 16-bit and alpha images are converted (alpha composited on white for RGB).
    """
    if not data:
        raise BadInput(field, "is empty; expected the bytes of a PNG, JPEG or WebP image")
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        raise BadInput(field, "is not a decodable image (expected PNG, JPEG or WebP bytes)") from None
    except Image.DecompressionBombError:
        raise PayloadTooLarge(field, f"decodes to more than {max_pixels} pixels") from None
    w, h = img.size
    if w * h > max_pixels:
        raise PayloadTooLarge(field, f"is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
    if w < 1 or h < 1:
        raise BadInput(field, "has no pixels")
    try:
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - Pillow raises many types for truncated or corrupt data
        raise BadInput(field, "is truncated or corrupt and could not be decoded") from None
    return _convert(img, mode)


def _convert(img: Image.Image, mode: str) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping at 255.
        img = img.point(lambda v: v / 256).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if mode == "RGB" and img.mode in ("RGBA", "LA", "PA"):
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, img.convert("RGBA")).convert("RGB")
    return img.convert(mode)


def _quoted(value: Any) -> Any:
    """A1111's infotext quoting: a text with a comma, colon or newline as a JSON string."""
    if isinstance(value, str) and any(c in value for c in ",:\n"):
        return json.dumps(value, ensure_ascii=False)
    return value


def _addon_hashes(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """A1111's ``Lora hashes`` and ``TI hashes``: "name: first 12 hex digits", quoted (a comma list)."""
    out: list[tuple[str, Any]] = []
    for key, label in (("loras", "Lora hashes"), ("embeddings", "TI hashes")):
        refs = [r for r in summary.get(key) or () if r.get("sha256")]
        if refs:
            names = ", ".join(f"{r['name'].split('/')[-1].replace(':', '').replace(',', '')}: {r['sha256'][:12]}"
                              for r in refs)
            out.append((label, f'"{names}"'))
    return out


def infotext(summary: dict[str, Any], seed: int, sampler_label: str | tuple[str, str | None], device: str,
             dtype: str, provenance: dict[str, str] | None = None, more: Sequence[tuple[str, Any]] = ()) -> str:
    """The A1111-style ``parameters`` text (1.9+: ``Schedule type`` apart from ``Sampler``),
    so tools that read A1111 PNGs read ours. ``provenance``: the engine's hashes and VAE;
    ``more``: further fields in order (hires fix, refiner)."""
    from . import __version__

    sampler, schedule = (sampler_label, None) if isinstance(sampler_label, str) else sampler_label
    extra = provenance or {}
    if summary.get("task") == "upscale":  # no generation: only what the upscale did (A1111's extras)
        return ", ".join(f"{k}: {v}" for k, v in [*postprocess_fields(summary.get("upscale")),
                                                   *face_fields(summary),
                                                   ("Size", f"{summary.get('width')}x{summary.get('height')}"),
                                                   ("Device", device), ("Dtype", dtype)] if v is not None)
    lines = [summary["prompt"]]
    if summary.get("negative_prompt"):
        lines.append(f"Negative prompt: {summary['negative_prompt']}")
    fields = [
        ("Steps", summary.get("steps")),
        ("Sampler", sampler),
        ("Schedule type", schedule),
        ("CFG scale", summary.get("guidance")),
        ("Seed", seed),
        *face_fields(summary),
        ("Size", f"{summary.get('width')}x{summary.get('height')}"),
        ("Model hash", extra.get("Model hash")),
        ("Model", summary.get("model")),
        ("VAE hash", extra.get("VAE hash")),
        ("VAE", extra.get("VAE")),
    ]
    if summary.get("task") != "txt2img":
        fields.append(("Denoising strength", summary.get("strength")))
    if summary.get("tiling"):
        fields.append(("Tiling", True))
    fields += postprocess_fields(summary.get("upscale"))
    fields += _addon_hashes(summary)
    if (summary.get("clip_skip") or 1) > 1:  # A1111 writes it only when it skips
        fields.append(("Clip skip", summary.get("clip_skip")))
    fields += [*((k, _quoted(v)) for k, v in more), ("Device", device), ("Dtype", dtype), ("Version", f"sdserve {__version__}")]
    lines.append(", ".join(f"{k}: {v}" for k, v in fields if v is not None))
    return "\n".join(lines)


def postprocess_fields(upscale: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """A1111's "Postprocess ..." infotext fields for a job's upscale settings (as a dict)."""
    if not upscale or upscale.get("upscaler") == "None":
        return []
    if upscale.get("width") is not None and upscale.get("height") is not None:
        out: list[tuple[str, Any]] = [("Postprocess upscale to", f"{upscale['width']}x{upscale['height']}"),
                                      ("Postprocess crop to fit", upscale.get("crop"))]
    else:
        out = [("Postprocess upscale by", f"{upscale.get('scale'):g}" if upscale.get("scale") else None)]
    out.append(("Postprocess upscaler", upscale.get("upscaler")))
    second, vis = upscale.get("upscaler_2"), upscale.get("upscaler_2_visibility") or 0
    if second not in (None, "None") and vis > 0:
        out.append(("Postprocess upscaler 2", f"{second} ({vis:g})"))
    return out


def face_fields(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """A1111's infotext fields for a job's face restoration (engine.faces): ``Face
    restoration: GFPGAN`` on a generation; its extras' ``GFPGAN visibility`` (and CodeFormer's
    visibility and weight) on an upscale job."""
    steps = summary.get("face_restoration") or ()
    if summary.get("task") != "upscale":
        return [("Face restoration", steps[0]["model"])] if steps else []
    out: list[tuple[str, Any]] = []
    for s in steps:
        out.append((f"{s['model']} visibility", f"{s['visibility']:g}"))
        if s["model"] == "CodeFormer":
            out.append(("CodeFormer weight", f"{s['weight']:g}"))
    return out


# zlib level 4, not Pillow's 6: on a smooth 512² image level 6 took 3x as long (112 vs 33 ms
# on one CPU core) and its file was 2% larger. At GPU speeds PNG encoding is the CPU's bottleneck.
PNG_COMPRESS_LEVEL = 4


def encode_image(img: Image.Image, fmt: str, parameters: str, quality: int = 95) -> bytes:
    """Encode ``img`` as png/jpeg/webp with ``parameters`` embedded (PNG text chunk or EXIF)."""
    buf = io.BytesIO()
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters)
        img.save(buf, format="PNG", pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
    elif fmt in ("jpeg", "webp"):
        exif = Image.Exif()
        # EXIF UserComment with the UNICODE charset prefix, as A1111 writes JPEG/WebP metadata.
        exif.get_ifd(_EXIF_IFD)[_EXIF_USER_COMMENT] = b"UNICODE\0" + parameters.encode("utf-16-be")
        img.convert("RGB").save(buf, format=fmt.upper(), quality=quality, exif=exif.tobytes())
    else:
        raise BadInput("output_format", f"{fmt!r} is not one of png, jpeg, webp")
    return buf.getvalue()


def sniff_content_type(data: bytes) -> str:
    """The image MIME type from magic bytes (clients should not trust file names)."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
