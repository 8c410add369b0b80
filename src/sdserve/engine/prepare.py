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
from .addon_files import AddonFolders
from .addon_refs import resolve_addons
from .catalog import Catalog, ModelSpec
from .control import check_control, check_ip_adapter, unit_field
from .outpaint import Outpaint, pad_and_mask, padded_size
from .params import GenerationParams, Task
from .prompt_syntax import parse_comfy_prompt, parse_prompt
from .schedulers import get_scheduler

__all__ = ["prepare", "prepare_with_images", "settle_inputs", "decode_inputs", "size_from_inputs", "MIN_SIDE", "MAX_SIDE", "DEFAULT_MAX_PIXELS"]

MIN_SIDE, MAX_SIDE = 64, 4096
# The engine's own cap on an input image's pixels (EngineOptions.max_image_pixels can lower it).
DEFAULT_MAX_PIXELS = 4096 * 4096
# How each input role is decoded, and the field name a problem with it is reported under.
_ROLE_FIELD = {"init": ("image", "RGB"), "mask": ("mask", "L"), "ip_adapter": ("ip_adapter.image", "RGB")}


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
    """An A1111-syntax prompt that sdserve can apply whole (never a part read as plain text);
    its <lora:...> tags are moved into ``loras`` by engine.addon_refs."""
    parse_prompt(text, field)


def _check_task(spec: ModelSpec, p: GenerationParams, task: Task) -> None:
    """The inputs fit the task, and the model does the task."""
    if p.mask_image is not None and p.init_image is None:
        raise BadInput("mask", "a mask needs an input image (image)")
    if task != "txt2img" and p.init_image is None:
        raise BadInput("image", f"task {task} needs an input image")
    if p.outpaint is not None:
        _check_outpaint(p)
    if task == "inpaint" and p.mask_image is None and p.outpaint is None:
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

    w, h = size if p.outpaint is None else padded_size(p.outpaint, *size)
    return p.model_copy(update={"width": side(w) if p.width is None else p.width,
                                "height": side(h) if p.height is None else p.height})


def decode_inputs(p: GenerationParams, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Image.Image]:
    """The input images decoded by role (BadInput naming ``image``/``mask`` when one is not an
    image, too large, or the mask's size differs from the image's)."""
    out: dict[str, Image.Image] = {}
    for inp in p.inputs:
        field, mode = _ROLE_FIELD[inp.role] if inp.role != "control" else (unit_field(inp.index, "image"), "RGB")
        out[inp.role if inp.index == 0 else f"{inp.role}.{inp.index}"] = decode_image(inp.data, field, max_pixels, mode)
    image, mask = out.get("init"), out.get("mask")
    if image is not None and mask is not None and image.size != mask.size:
        raise BadInput("mask", f"is {mask.width}x{mask.height} but the image is {image.width}x{image.height}; "
                               "they must be the same size")
    return out


def prepare(catalog: Catalog, params: GenerationParams, max_pixels: int = DEFAULT_MAX_PIXELS,
            addons: AddonFolders | None = None) -> GenerationParams:
    """Resolve defaults and check what any dialect must satisfy; raises BadInput. ``addons``:
    the server's add-on folders, where the add-on files a request names (LoRAs, embeddings,
    ControlNets, a VAE) must exist (None: LoRA and embedding names are refused)."""
    p = prepare_with_images(catalog, params, max_pixels, addons)[0]
    if addons is not None and p.vae is not None:
        addons.find("vae", p.vae, field="vae")
    return p


def settle_inputs(catalog: Catalog, params: GenerationParams, max_pixels: int = DEFAULT_MAX_PIXELS,
                  addons: AddonFolders | None = None) -> tuple[GenerationParams, dict[str, Image.Image]]:
    """What the inputs decide, checked: the task (from the inputs when left out), the sides
    left out (from the input image), the images themselves (decoded by role, same size), and
    that the model does the task. Other defaults stay unresolved."""
    spec = catalog.get(params.model)
    task = params.inferred_task
    # A txt2img request carries no images, whatever a dialect was sent: they would be stored
    # and decoded for nothing.
    # (ControlNet images are kept: they guide txt2img too.)
    kept = tuple(i for i in params.inputs if i.role not in ("init", "mask"))
    p = params.model_copy(update={"task": task, **({"inputs": kept} if task == "txt2img" else {})})
    _check_task(spec, p, task)
    check_control(p, spec.arch, addons)
    check_ip_adapter(p, spec.arch, addons)
    images = decode_inputs(p, max_pixels)
    if p.outpaint is not None:  # the inpaint job it is: padded image and its mask
        images["init"], images["mask"] = _outpainted(images["init"], p.outpaint, max_pixels)
    p = size_from_inputs(p)
    _check_sides(p)
    return p, images


def _check_outpaint(p: GenerationParams) -> None:
    """An outpaint request: an image to extend, no mask of its own, at least one margin."""
    o = p.outpaint
    assert o is not None
    if p.init_image is None:
        raise BadInput("image", "outpainting needs the image to extend")
    if p.mask_image is not None:
        raise BadInput("mask", "outpainting makes its own mask (the new border); send no mask with outpaint")
    if p.task not in (None, "inpaint"):
        raise BadInput("outpaint", f"outpainting is an inpaint job, not {p.task}")
    if not (o.left or o.right or o.top or o.bottom):
        raise BadInput("outpaint", "give at least one margin above 0 (left, right, top or bottom)")


def _outpainted(image: Image.Image, o: Outpaint, max_pixels: int) -> tuple[Image.Image, Image.Image]:
    """The padded image and its mask, once the padded size is checked against the limits
    (too wide or too tall names the larger margin on that axis)."""
    w, h = padded_size(o, image.width, image.height)
    for side, (a, b), size in ((w, ("left", "right"), image.width), (h, ("top", "bottom"), image.height)):
        if side > MAX_SIDE:
            name = a if getattr(o, a) >= getattr(o, b) else b
            raise BadInput(f"outpaint.{name}", f"the {size}-px image with margins {getattr(o, a)} + {getattr(o, b)} "
                                               f"would be {side} px; each side may be at most {MAX_SIDE}")
    if w * h > max_pixels:
        name = max(("left", "right", "top", "bottom"), key=lambda k: getattr(o, k))
        raise BadInput(f"outpaint.{name}", f"the padded image would be {w}x{h} = {w * h} pixels; "
                                           f"at most {max_pixels} are allowed")
    return pad_and_mask(image, o)


def _check_sides(p: GenerationParams) -> None:
    """Sides on the latent grid (multiples of 8) and in range; None (not resolved yet) passes."""
    for name in ("width", "height"):
        v = getattr(p, name)
        if v is not None and (v % 8 or not MIN_SIDE <= v <= MAX_SIDE):
            raise BadInput(name, f"{name} {v} is not allowed: use a multiple of 8 between {MIN_SIDE} and {MAX_SIDE}")


def prepare_with_images(catalog: Catalog, params: GenerationParams, max_pixels: int = DEFAULT_MAX_PIXELS,
                        addons: AddonFolders | None = None) -> tuple[GenerationParams, dict[str, Image.Image]]:
    """:func:`prepare`, also returning the decoded input images by role (the engine runs on
    them; checking them needs the decode anyway)."""
    if params.task == "upscale":  # no denoising loop: its own checks (engine.upscalers.checks)
        from .upscalers.checks import prepare_upscale

        return prepare_upscale(catalog, params, max_pixels)
    p, images = settle_inputs(catalog, params, max_pixels, addons)
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
    if p.upscale is not None:  # upscaled after the loop: the result fits the limits
        from .upscalers.checks import check_upscale

        check_upscale(p, max_pixels)
    # LoRA tags, the model's preset LoRAs and embedding names -> files (after the prompt checks)
    p = resolve_addons(p, addons, catalog.get(p.model).loras)
    _check_passes(catalog, p, max_pixels, addons)
    if p.sd_upscale is not None:
        _check_sd_upscale(p, images, max_pixels, addons)
    return p, images


def _check_sd_upscale(p: GenerationParams, images: dict[str, Image.Image], max_pixels: int,
                      addons: AddonFolders | None) -> None:
    """A1111's SD upscale: img2img of one image, tiles that overlap less than their sides,
    an upscaler that exists and an upscaled image within the pixel limit."""
    from .sd_upscale_run import upscale_settings
    from .upscalers import find_upscaler
    from .upscalers.checks import plan_upscale

    s = p.sd_upscale
    assert s is not None and p.width and p.height
    if p.task != "img2img":
        raise BadInput("sd_upscale", "SD upscale is img2img of an image: send an image and no mask")
    for name in ("control", "ip_adapter", "upscale", "outpaint"):
        if getattr(p, name):
            raise BadInput(name, f"{name} with SD upscale is not supported; send one of them")
    if s.overlap >= min(p.width, p.height):
        raise BadInput("sd_upscale.overlap", f"{s.overlap} is not allowed: the overlap must be smaller than the "
                                             f"tile ({p.width}x{p.height}, the request's width and height)")
    if addons is not None and s.upscaler != "None":
        find_upscaler(addons, s.upscaler, field="sd_upscale.upscaler")
    init = images["init"]
    try:
        plan_upscale(init.width, init.height, upscale_settings(s), max_pixels)
    except BadInput as e:
        raise e.renamed({"upscale.scale": "sd_upscale.scale"}) from None


def _named_model(catalog: Catalog, name: str, field: str) -> ModelSpec:
    """A second model a request names (hires checkpoint, refiner), as BadInput on ``field``."""
    if name not in catalog:
        raise BadInput(field, f"model {name!r} not found; available: {', '.join(m.id for m in catalog)}")
    return catalog.get(name)


def _check_passes(catalog: Catalog, p: GenerationParams, max_pixels: int,
                  addons: AddonFolders | None) -> None:
    """Hires fix and refiner: what they run on, and the size the hires pass makes (an image
    upscaler's name is checked in ``addons``; where no add-on folders are at hand, the engine
    checks it when the job runs)."""
    spec = catalog.get(p.model)
    if p.hires is not None:
        h = p.hires
        if p.task != "txt2img":
            raise BadInput("hires", "hires fix is a second pass of text-to-image; send it without an input image")
        if h.latent_mode is None and addons is not None:
            from .upscalers import find_upscaler

            find_upscaler(addons, h.upscaler, field="hires.upscaler")
        assert p.width and p.height
        t = h.target(p.width, p.height)
        if not (MIN_SIDE <= t.width <= MAX_SIDE and MIN_SIDE <= t.height <= MAX_SIDE) or t.width * t.height > max_pixels:
            raise BadInput("hires.scale" if not (h.resize_x or h.resize_y) else "hires.resize_x",
                           f"the hires pass would make {t.width}x{t.height}; each side must be {MIN_SIDE}-{MAX_SIDE} "
                           f"and the image at most {max_pixels} pixels")
        if h.scheduler is not None:
            get_scheduler(h.scheduler, "hires.scheduler")
        if h.model is not None:
            other = _named_model(catalog, h.model, "hires.model")
            if other.arch != spec.arch or "img2img" not in other.tasks:
                raise BadInput("hires.model", f"{other.id} cannot run the hires pass of {spec.id}: it needs an "
                                              f"{spec.arch} model that does img2img")
        for name in ("prompt", "negative_prompt"):
            text = getattr(h, name)
            if text is not None:
                _check_text(f"hires.{name}", text)
                if p.prompt_syntax == "a1111":
                    _check_syntax(f"hires.{name}", text)
    if p.refiner is not None:
        refiner = _named_model(catalog, p.refiner.model, "refiner.model")
        if p.hires is not None:
            raise BadInput("refiner", "the refiner with hires fix is not supported yet; send one of them")
        if p.task != "txt2img":
            raise BadInput("refiner", "the refiner finishes a text-to-image schedule; send it without an input image")
        if spec.arch != "sdxl" or refiner.arch != "sdxl" or "img2img" not in refiner.tasks:
            raise BadInput("refiner.model", f"{refiner.id} cannot refine {spec.id}: the refiner split (diffusers' "
                                            "denoising_end/denoising_start) needs an SDXL base and an SDXL refiner")
