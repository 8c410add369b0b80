"""OpenAI Images <-> GenerationParams, as pure functions.

Model names: a catalog id or alias is used as is; OpenAI's own names (``dall-e-2``,
``dall-e-3``, ``gpt-image-*``) and a missing ``model`` mean the configured default model
(``Settings.default_model``), so clients written for OpenAI work without changes.

Masks: OpenAI marks the area to edit with TRANSPARENT pixels (alpha 0); the engine wants
white = repaint. Without a mask, the input image's own transparency is the mask (dall-e-2);
an opaque image without a mask is edited as a whole (img2img), as the GPT image models do.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from sdserve.engine.catalog import Catalog, ModelSpec
from sdserve.engine.params import GenerationParams, input_images
from sdserve.errors import BadInput
from sdserve.images import decode_image
from sdserve.service.jobs import Output
from .protocol import ImageEditForm, ImageGenerateRequest, ImageVariationForm

__all__ = [
    "OPENAI_MODEL_PREFIXES",
    "resolve_model",
    "parse_size",
    "generation_params",
    "edit_params",
    "variation_params",
    "openai_mask",
    "images_response",
    "model_object",
    "VARIATION_STRENGTH",
    "ENGINE_FIELDS",
    "in_dialect_terms",
]

# OpenAI's image model families; any name starting with these maps to the default model.
OPENAI_MODEL_PREFIXES = ("dall-e-", "gpt-image-", "chatgpt-image-")
# Variations are img2img from the input with an empty prompt; 0.7 keeps the composition
# recognisable while changing details, the middle of the 0.6-0.8 range that works for SD.
VARIATION_STRENGTH = 0.7
# Engine field names that OpenAI calls otherwise, so an engine error names what the caller sent.
ENGINE_FIELDS = {"width": "size", "height": "size"}
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*$", re.ASCII)


def resolve_model(name: str | None, catalog: Catalog, default_model: str) -> ModelSpec:
    """The spec for ``name``: a catalog id/alias, or the default for OpenAI names and None."""
    if name is not None and name in catalog:
        return catalog.get(name)
    if name is None or name.startswith(OPENAI_MODEL_PREFIXES):
        return catalog.get(default_model)
    return catalog.get(name)  # raises UnknownModel listing what exists


def parse_size(size: str | None, field: str = "size") -> tuple[int | None, int | None]:
    """'WxH' to (width, height); None or 'auto' to (None, None) (the model's or image's size)."""
    if size is None or size.strip().lower() == "auto":
        return None, None
    m = _SIZE.match(size)
    if not m:
        raise BadInput(field, f"{size!r} is not a size: use 'WIDTHxHEIGHT' such as '512x512', or 'auto'")
    # The 8-px grid and the range are checked by prepare(), as for every dialect ("width" and
    # "height" are renamed to "size").
    return int(m.group(1)), int(m.group(2))


def generation_params(req: ImageGenerateRequest, spec: ModelSpec) -> GenerationParams:
    """A text-to-image request for ``spec``."""
    width, height = parse_size(req.size)
    return GenerationParams(
        model=spec.id,
        task="txt2img",
        prompt=req.prompt,
        negative_prompt=req.negative_prompt or "",
        width=width,
        height=height,
        steps=req.steps,
        guidance=req.guidance,
        seed=req.seed,
        n=req.n or 1,
        output_format=req.output_format or "png",
    )


def openai_mask(alpha_source: Image.Image) -> Image.Image | None:
    """White-on-black repaint mask from an RGBA image's transparency, or None if it has none.

    Pixels more than half transparent (alpha < 128) are edited; OpenAI documents fully
    transparent ones, and anti-aliased mask edges should not flip the rule.
    """
    mask = alpha_source.getchannel("A").point(lambda a: 255 if a < 128 else 0)
    return mask if mask.getbbox() is not None else None  # no bbox: no pixel to edit


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def edit_params(
    form: ImageEditForm, images: Sequence[bytes], mask: bytes | None, spec: ModelSpec, max_pixels: int
) -> GenerationParams:
    """An edit: inpaint inside the mask (or the image's transparency), else img2img."""
    if not images:
        raise BadInput("image", "is required: upload the image to edit as a file")
    if len(images) > 1:
        raise BadInput("image", f"got {len(images)} images; Stable Diffusion edits one image per request")
    image = images[0]
    # OpenAI marks the area to edit by transparency: the alpha channel becomes the mask here;
    # the sizes, the task and the model are checked by prepare() as for every dialect.
    img = decode_image(image, "image", max_pixels, mode="RGBA")
    if mask is not None:
        sd_mask = openai_mask(decode_image(mask, "mask", max_pixels, mode="RGBA"))
        if sd_mask is None:
            raise BadInput("mask", "has no transparent pixels: an OpenAI mask marks the area to edit with "
                                   "fully transparent pixels (alpha 0) and keeps the opaque ones")
    else:
        sd_mask = openai_mask(img)
    width, height = parse_size(form.size)
    strength = form.strength if form.strength is not None else (1.0 if sd_mask is not None else None)
    return GenerationParams(
        model=spec.id,
        prompt=form.prompt,
        negative_prompt=form.negative_prompt or "",
        width=width,
        height=height,
        steps=form.steps,
        guidance=form.guidance,
        strength=strength,
        seed=form.seed,
        n=form.n or 1,
        inputs=input_images(init=image, mask=_png(sd_mask) if sd_mask is not None else None),
        output_format=form.output_format or "png",
    )


def variation_params(form: ImageVariationForm, image: bytes | None, spec: ModelSpec) -> GenerationParams:
    """A variation: img2img of the image with an empty (or the extension) prompt."""
    if image is None:
        raise BadInput("image", "is required: upload the image to vary as a file")
    if spec.tasks == ("inpaint",):
        raise BadInput("model", f"model {spec.id} only inpaints; variations need an img2img model")
    width, height = parse_size(form.size)
    return GenerationParams(
        model=spec.id,
        task="img2img",
        prompt=form.prompt or "",
        negative_prompt=form.negative_prompt or "",
        width=width,
        height=height,
        steps=form.steps,
        guidance=form.guidance,
        strength=VARIATION_STRENGTH if form.strength is None else form.strength,
        seed=form.seed,
        n=form.n or 1,
        inputs=input_images(init=image),
        output_format=form.output_format or "png",
    )


def images_response(
    outputs: Sequence[Output],
    response_format: str | None,
    created: int,
    publish: Callable[[Output], str],
    params: GenerationParams,
) -> dict[str, Any]:
    """The ``ImagesResponse`` body. ``publish`` turns an output into a URL (response_format=url).

    Each item also carries sdserve's ``seed`` (an extension the SDK's models keep as an extra).
    """
    data = []
    for out in outputs:
        assert out.data is not None, "JobService.run returns outputs with their bytes"
        item: dict[str, Any] = (
            {"b64_json": base64.b64encode(out.data).decode("ascii")}
            if response_format == "b64_json"
            else {"url": publish(out)}
        )
        item["seed"] = out.seed
        if params.original_prompt is not None:  # the server's enhancer rewrote the prompt
            item["revised_prompt"] = params.prompt
        data.append(item)
    return {"created": created, "data": data, "output_format": params.output_format,
            "size": f"{params.width}x{params.height}"}


def model_object(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "sdserve"}


def in_dialect_terms(err: BadInput, names: dict[str, str] = ENGINE_FIELDS) -> BadInput:
    """``err`` with its field renamed from the engine's name to this dialect's."""
    return err.renamed(names)
