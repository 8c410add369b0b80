"""Turning an engine result into encoded outputs with their parameters embedded."""

from __future__ import annotations

from ..engine.params import GenerationResult
from ..engine.schedulers import a1111_label
from ..images import CONTENT_TYPES, encode_image, infotext
from .jobs import Output

__all__ = ["encode_outputs"]


def encode_outputs(result: GenerationResult) -> list[Output]:
    """One Output per image, in the requested format, each with its own seed in the metadata."""
    p = result.params
    summary = p.summary()
    fmt = p.output_format
    out = []
    for i, (img, seed) in enumerate(zip(result.images, result.seeds, strict=True)):
        text = infotext(summary, seed, a1111_label(p.scheduler or ""), result.device, result.dtype)
        out.append(Output(index=i, seed=seed, content_type=CONTENT_TYPES[fmt], data=encode_image(img, fmt, text)))
    return out
