"""OpenAI image streaming (``stream: true``), as pure functions: which step previews become
``partial_image`` events, and the events' bodies.

OpenAI sends up to ``partial_images`` (0-3) partial images while it draws, then one
``completed`` event per image (``image_generation.*`` for generations, ``image_edit.*`` for
edits; openai-python's ImageGenPartialImageEvent, ImageGenCompletedEvent, ImageEdit...). Here a
partial image is the engine's live preview of the first image (a cheap latent-to-RGB map at
1/8 size), scaled to the requested size and written in the requested format, so a client can
draw it where the final image will go.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from PIL import Image

from sdserve.images import decode_image, encode_image

__all__ = ["StreamKind", "partial_due", "partial_image", "image_event", "ZERO_USAGE"]

StreamKind = Literal["image_generation", "image_edit"]
# Token counts are a GPT image model's billing unit; Stable Diffusion has none to report.
ZERO_USAGE = {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
              "output_tokens": 0, "total_tokens": 0}


def partial_due(step: int, total: int, wanted: int, sent: int) -> bool:
    """Whether the next partial image is due at ``step`` of ``total``: the ``wanted`` partials
    are spread evenly before the final image (partial k once the job is past (k+1)/(wanted+1)).
    Previews come every few steps only, so a short job may send fewer, as OpenAI may."""
    return sent < wanted and total > 0 and step * (wanted + 1) >= (sent + 1) * total


def partial_image(preview_png: bytes, width: int, height: int, fmt: str) -> bytes:
    """The preview scaled to the output size and encoded as the output will be."""
    img = decode_image(preview_png, "preview", 2**31).convert("RGB")
    return encode_image(img.resize((width, height), Image.Resampling.BILINEAR), fmt, "")


def image_event(kind: StreamKind, image: bytes, *, fields: dict[str, Any], created: int,
                partial_index: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """A ``<kind>.partial_image`` (with ``partial_index``) or ``<kind>.completed`` event body.
    ``fields``: size, output_format, quality, background as the request resolved them.
    The completed event also carries sdserve's ``seed`` (an extra the SDK keeps)."""
    body: dict[str, Any] = {"b64_json": base64.b64encode(image).decode("ascii"), "created_at": created, **fields}
    if partial_index is not None:
        return {"type": f"{kind}.partial_image", **body, "partial_image_index": partial_index}
    return {"type": f"{kind}.completed", **body, "usage": ZERO_USAGE, "seed": seed}
