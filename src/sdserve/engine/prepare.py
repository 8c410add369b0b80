"""Resolving and checking a request before it is queued, without torch.

The job service calls this (through the engine) at submit time; a Ray API replica, which
runs no model, calls it directly so that bad input is rejected where the request arrives.
Every check any dialect needs lives here, worded once; dialects only rename the engine's
field names (``image``, ``mask``, ``width``, ...) into their own (``BadInput.renamed``).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image

from ..errors import BadInput
from ..images import decode_image
from .catalog import Catalog, ModelSpec
from .params import GenerationParams, Task
from .prompt_syntax import parse_comfy_prompt, parse_prompt
from .schedulers import get_scheduler

__all__ = ["prepare", "prepare_with_images", "settle_inputs", "decode_inputs", "size_from_inputs", "MIN_SIDE", "MAX_SIDE", "DEFAULT_MAX_PIXELS"]

MIN_SIDE, MAX_SIDE = 64, 4096
# The engine's own cap on an input image's pixels (EngineOptions.max_image_pixels can lower it).
DEFAULT_MAX_PIXELS = 4096 * 4096
# How each input role is decoded, and the field name a problem with it is reported under.
_ROLE_FIELD = {"init": ("image", "RGB"), "mask": ("mask", "L")}


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


def _check_syntax(field: str, text: str) -> None:
    """An A1111-syntax prompt that sdserve can apply whole (never a part read as plain text)."""
    parsed = parse_prompt(text, field)
    if parsed.loras:
        tag = parsed.loras[0]
        raise BadInput(field, f"<lora:{tag.name}:{tag.weight:g}>: LoRA is not available on this server yet; "
                              "remove the tag")


def _check_task(spec: ModelSpec, p: GenerationParams, task: Task) -> None:
    """The inputs fit the task, and the model does the task."""
    if p.mask_image is not None and p.init_image is None:
        raise BadInput("mask", "a mask needs an input image (image)")
    if task != "txt2img" and p.init_image is None:
        raise BadInput("image", f"task {task} needs an input image")
    if task == "inpaint" and p.mask_image is None:
        raise BadInput("mask", "inpainting needs a mask (white = repaint, black = keep)")
    if spec.tasks == ("inpaint",) and task != "inpaint":
        raise BadInput("mask" if p.init_image is not None else "image",
                       f"model {spec.id} is an inpainting model: send an image and a mask "
                       "(white = repaint, black = keep)")
    spec.check_task(task)  # the model's own wording of what it does


def _header_size(data: bytes) -> tuple[int, int] | None:
    """An encoded image's size from its header alone (no pixel is decoded); None if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - decode_inputs reports it, naming the field
        return None


def size_from_inputs(p: GenerationParams, max_side: int | None = None) -> GenerationParams:
    """Each side the caller left out takes the input image's, rounded down to the 8-px grid
    (at least 64, and at most ``max_side`` where a dialect caps it: ModelsLab 1024)."""
    init = p.init_image
    if init is None or (p.width is not None and p.height is not None):
        return p
    size = _header_size(init)
    if size is None:
        return p

    def side(v: int) -> int:
        v = max(MIN_SIDE, v // 8 * 8)
        return min(v, max_side // 8 * 8) if max_side is not None else v

    w, h = size
    return p.model_copy(update={"width": side(w) if p.width is None else p.width,
                                "height": side(h) if p.height is None else p.height})


def decode_inputs(p: GenerationParams, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Image.Image]:
    """The input images decoded by role (BadInput naming ``image``/``mask`` when one is not an
    image, too large, or the mask's size differs from the image's)."""
    out: dict[str, Image.Image] = {}
    for inp in p.inputs:
        field, mode = _ROLE_FIELD[inp.role]
        out[inp.role if inp.index == 0 else f"{inp.role}.{inp.index}"] = decode_image(inp.data, field, max_pixels, mode)
    image, mask = out.get("init"), out.get("mask")
    if image is not None and mask is not None and image.size != mask.size:
        raise BadInput("mask", f"is {mask.width}x{mask.height} but the image is {image.width}x{image.height}; "
                               "they must be the same size")
    return out


def prepare(catalog: Catalog, params: GenerationParams, max_pixels: int = DEFAULT_MAX_PIXELS) -> GenerationParams:
    """Resolve defaults and check what any dialect must satisfy; raises BadInput."""
    return prepare_with_images(catalog, params, max_pixels)[0]


def settle_inputs(catalog: Catalog, params: GenerationParams,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[GenerationParams, dict[str, Image.Image]]:
    """What the inputs decide, checked: the task (from the inputs when left out), the sides
    left out (from the input image), the images themselves (decoded by role, same size), and
    that the model does the task. Other defaults stay unresolved."""
    spec = catalog.get(params.model)
    task = params.inferred_task
    # A txt2img request carries no images, whatever a dialect was sent: they would be stored
    # and decoded for nothing.
    p = params.model_copy(update={"task": task, **({"inputs": ()} if task == "txt2img" else {})})
    _check_task(spec, p, task)
    images = decode_inputs(p, max_pixels)
    p = size_from_inputs(p)
    _check_sides(p)
    return p, images


def _check_sides(p: GenerationParams) -> None:
    """Sides on the latent grid (multiples of 8) and in range; None (not resolved yet) passes."""
    for name in ("width", "height"):
        v = getattr(p, name)
        if v is not None and (v % 8 or not MIN_SIDE <= v <= MAX_SIDE):
            raise BadInput(name, f"{name} {v} is not allowed: use a multiple of 8 between {MIN_SIDE} and {MAX_SIDE}")


def prepare_with_images(catalog: Catalog, params: GenerationParams,
                        max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[GenerationParams, dict[str, Image.Image]]:
    """:func:`prepare`, also returning the decoded input images by role (the engine runs on
    them; checking them needs the decode anyway)."""
    p, images = settle_inputs(catalog, params, max_pixels)
    p = p.resolve(catalog.get(p.model))  # resolve is idempotent: fills only what is still None
    task = p.task
    for name in ("prompt", "negative_prompt"):
        _check_text(name, getattr(p, name))
        if p.prompt_syntax == "a1111":
            _check_syntax(name, getattr(p, name))
        if p.prompt_syntax == "comfyui":  # ComfyUI's syntax reads everything but embeddings
            parse_comfy_prompt(getattr(p, name), name)
    _check_sides(p)  # again: a configured model's default size is checked like a caller's
    if not (p.steps and 1 <= p.steps <= 200):
        raise BadInput("steps", f"{p.steps} is not allowed: use 1 to 200")
    if p.guidance is None or not math.isfinite(p.guidance) or not 0 <= p.guidance <= 50:
        raise BadInput("guidance", f"{p.guidance} is not allowed: use a number from 0 to 50")
    if p.strength is None or not math.isfinite(p.strength) or not 0 < p.strength <= 1:
        raise BadInput("strength", f"{p.strength} is not allowed: use a number above 0 and at most 1")
    if task != "txt2img" and int(p.steps * p.strength) < 1:
        # diffusers runs int(steps * strength) steps of an img2img/inpaint schedule (same
        # expression, same rounding); zero would crash the pipeline with a reshape error.
        raise BadInput("strength", f"{p.strength} with {p.steps} steps leaves no denoising step to run: "
                                   "raise strength or steps so that strength x steps is at least 1")
    get_scheduler(p.scheduler or "")
    return p, images
