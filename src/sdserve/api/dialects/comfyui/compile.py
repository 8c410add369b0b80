"""A validated ComfyUI graph compiled into sdserve jobs.

Each output node (SaveImage, PreviewImage) is walked back to the sampler that made its
images: every node on the way is evaluated by its function in ``COMPILERS`` into a value that
says what it stands for (a checkpoint, a prompt, an empty latent, an encoded image, a
sampler pass, ...), and the decoded sampler pass becomes one ``GenerationParams``. Outputs
fed by the same decode share its job (ImageUpscaleWithModel after it adds the job's
``upscale``; over a LoadImage alone it is a task "upscale" job). ControlNet apply nodes ride
on the conditioning into the job's ``control`` units. What a node asks that the engine cannot do is a
``node_errors`` entry naming the node and the input, never an approximation.

Pixel operations that happen before sampling (LoadImage, ImageScale, VAEEncodeForInpaint's
grey fill and mask growth) are done here on the input image, as ComfyUI does them, so the
job carries the image the sampler really starts from.
"""

from __future__ import annotations

import copy
import io
import math
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from PIL import Image

from sdserve.engine.addon_files import AddonFolders
from sdserve.engine.catalog import Catalog, ModelSpec
from sdserve.engine.params import MAX_SEED, ControlUnit, GenerationParams, InputImage, LoraRef, UpscaleSettings
from sdserve.engine.prepare import DEFAULT_MAX_PIXELS
from sdserve.engine.schedulers import SchedulerEntry
from sdserve.engine.upscalers import find_upscaler
from sdserve.errors import BadInput
from sdserve.images import decode_image

from .checkpoints import find_checkpoint
from .graph import Graph, GraphError, Link, Node, error_item, node_available, outputs_failed, validate_prompt
from .nodes import NODES
from .samplers import SamplerRefused, resolve_comfy

__all__ = ["CompileEnv", "CompiledJob", "CompiledJobs", "OutputNode", "GraphError", "compile_prompt", "object_info", "COMPILERS",
           "node_errors_for"]

# The most images one job holds (GenerationParams.n); a larger batch_size is split into jobs
# of consecutive seeds, which gives the same images (image i always gets seed + i).
_MAX_N = 16
_MAX_STEPS = 200  # engine.prepare's limit, checked here to name ComfyUI's inputs


@dataclass(frozen=True)
class CompileEnv:
    """What a graph may look at."""

    catalog: Catalog
    addons: AddonFolders
    # (filename, subfolder, type) -> bytes of an uploaded image; raises FileNotFoundError.
    load_input: Callable[[str, str | None, str], bytes]
    # The files LoadImage offers (/object_info); the router's input folder listing.
    list_inputs: Callable[[], list[str]] = lambda: []
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class OutputNode:
    node_id: str
    kind: Literal["output", "temp"]  # SaveImage -> "output", PreviewImage -> "temp"
    filename_prefix: str


class CompiledJobs(list["CompiledJob"]):
    """The jobs of a prompt, and the outputs left out of them: ComfyUI's ``node_errors`` for
    outputs that failed validation while others are valid (the 200 answer carries them)."""

    def __init__(self, jobs: list[CompiledJob], node_errors: dict[str, Any]) -> None:
        super().__init__(jobs)
        self.node_errors = node_errors


@dataclass(frozen=True)
class CompiledJob:
    params: GenerationParams  # one sdserve job
    outputs: tuple[OutputNode, ...]  # the SaveImage/PreviewImage nodes that receive this job's images
    # Engine field -> (node id, input name) it came from, so an engine BadInput at submit
    # is reported on the node the caller wrote (node_errors_for).
    fields: Mapping[str, tuple[str, str]] = field(default_factory=dict)


class _Refuse(Exception):
    """A node the engine cannot run as asked: reported in node_errors."""

    def __init__(self, node: Node | str, input_name: str | None, details: str,
                 kind: str = "unsupported_graph", message: str = "Not supported by sdserve") -> None:
        super().__init__(details)
        self.node_id = node.id if isinstance(node, Node) else node
        self.item = error_item(kind, message, details, **({"input_name": input_name} if input_name else {}))


# ---- the values nodes stand for -------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    spec: ModelSpec
    node_id: str
    # LoraLoader's (add-on name, weight) pairs applied to this MODEL, in graph order.
    loras: tuple[tuple[str, float], ...] = ()
    lora_node: str = ""  # the last LoraLoader (for errors on the job's loras)


@dataclass(frozen=True)
class Clip:
    checkpoint: Checkpoint
    node_id: str  # the node whose input names the encoder (for errors)
    loras: tuple[tuple[str, float], ...] = ()
    # CLIPSetLastLayer's stop_at_clip_layer as A1111's clip skip (1: the model's usual layer).
    clip_skip: int = 1


@dataclass(frozen=True)
class Vae:
    checkpoint: Checkpoint | None
    # VAELoader: the add-on name of a VAE file replacing the model's own, and its node.
    file: str | None = None
    node_id: str = ""


@dataclass(frozen=True)
class Control:
    """ControlNetApplyAdvanced: one ControlNet unit on a conditioning, and its image."""

    unit: ControlUnit
    pixels: Pixels
    node_id: str


@dataclass(frozen=True)
class Conditioning:
    text: str
    clip: Clip
    node_id: str
    # ControlNet units applied to this conditioning, in graph order (engine: params.control).
    control: tuple[Control, ...] = ()


@dataclass(frozen=True)
class Pixels:
    """An input image (RGB) and the LoadImage node it came from."""

    image: Image.Image
    node_id: str


@dataclass(frozen=True)
class Mask:
    """A mask (L, white = repaint) and the node it came from."""

    image: Image.Image
    node_id: str
    input_name: str


@dataclass(frozen=True)
class EmptyLatent:
    width: int
    height: int
    batch: int
    node_id: str


@dataclass(frozen=True)
class Encoded:
    """VAEEncode / VAEEncodeForInpaint / SetLatentNoiseMask: an image to start from."""

    pixels: Pixels
    vae: Vae
    node_id: str
    mask: Mask | None = None


@dataclass(frozen=True)
class Sampled:
    """One sampler pass over its latent."""

    node: Node
    model: Checkpoint
    positive: Conditioning
    negative: Conditioning
    latent: EmptyLatent | Encoded
    seed: int
    steps: int  # the engine's steps (the whole schedule)
    guidance: float
    scheduler: SchedulerEntry
    strength: float
    fields: dict[str, tuple[str, str]]
    # A second pass over this one's upscaled latent (GenerationParams.hires, engine.hires), and
    # the model that pass samples with (its VAE decodes).
    hires: dict[str, Any] | None = None
    last_model: Checkpoint | None = None
    # KSamplerAdvanced stopped at this step with its noise left in (a refiner hand-off), and
    # the refiner that finished it (GenerationParams.refiner, engine.hires).
    stopped_at: int | None = None
    refiner: dict[str, Any] | None = None


@dataclass(frozen=True)
class Upscaled:
    """LatentUpscale(By) over a sampled latent: the hires fix's upscale, to ``width`` x ``height``."""

    sampled: Sampled
    width: int
    height: int
    method: str
    node_id: str


@dataclass(frozen=True)
class UpscaleModel:
    """UpscaleModelLoader: an upscaler file (engine.upscalers name) and its native factor."""

    name: str
    scale: int
    node_id: str


@dataclass(frozen=True)
class Decoded:
    sampled: Sampled
    node_id: str
    vae: Vae
    # ImageUpscaleWithModel after the decode (GenerationParams.upscale), and its node.
    upscale: UpscaleModel | None = None


@dataclass(frozen=True)
class UpscaledPixels:
    """ImageUpscaleWithModel over a loaded image: a task "upscale" job, no sampler."""

    pixels: Pixels
    model: UpscaleModel
    node_id: str


# ---- one function per node ------------------------------------------------------------

class _Eval:
    """Evaluates nodes on demand, each once."""

    def __init__(self, graph: Graph, env: CompileEnv) -> None:
        self.graph = graph
        self.env = env
        self.done: dict[str, tuple[Any, ...]] = {}

    def __call__(self, node: Node, name: str) -> Any:
        """The value feeding ``node``'s input ``name``."""
        value = node.inputs[name]
        if not isinstance(value, Link):
            return value
        src = self.graph.nodes[value.node_id]
        if src.id not in self.done:
            self.done[src.id] = COMPILERS[src.class_type](src, self)
        return self.done[src.id][value.slot]


Compiler = Callable[[Node, _Eval], tuple[Any, ...]]


def _checkpoint(node: Node, ev: _Eval) -> tuple[Any, ...]:
    spec = find_checkpoint(ev.env.catalog, node.inputs["ckpt_name"])
    if spec is None:  # validation checked the name; the catalog changed in between
        raise _Refuse(node, "ckpt_name", f"ckpt_name: no model named {node.inputs['ckpt_name']!r}",
                      "value_not_in_list", "Value not in list")
    ckpt = Checkpoint(spec, node.id)
    return ckpt, Clip(ckpt, node.id), Vae(ckpt)


def _clip_text(node: Node, ev: _Eval) -> tuple[Any, ...]:
    clip = ev(node, "clip")
    return (Conditioning(node.inputs["text"], clip, node.id),)


def _clip_last_layer(node: Node, ev: _Eval) -> tuple[Any, ...]:
    """ComfyUI's layer as the engine's clip skip (A1111's numbering: 1 is the model's usual
    layer). SD 1.5 conditions on the last layer, so -1 is skip 1 and -2 skip 2. SDXL conditions
    on the penultimate: -2 is skip 1, -3 skip 2, and ComfyUI's -1 (the last layer, which this
    node selects on SDXL) has no engine equivalent."""
    clip = ev(node, "clip")
    stop = node.inputs["stop_at_clip_layer"]
    sdxl = clip.checkpoint.spec.arch == "sdxl"
    if sdxl and stop == -1:
        raise _Refuse(node, "stop_at_clip_layer", "stop_at_clip_layer: -1 makes SDXL condition on its text encoders' "
                                                  "last layer, which sdserve's engine does not offer; SDXL's own "
                                                  "layer is -2 (or remove this node)")
    skip = -stop - 1 if sdxl else -stop
    if skip != 1 and "clip_skip" not in GenerationParams.model_fields:
        usual = -2 if sdxl else -1
        raise _Refuse(node, "stop_at_clip_layer", f"stop_at_clip_layer: only {usual} (the model's usual layer) is "
                                                  "available: this server's engine has no clip skip yet")
    return (replace(clip, clip_skip=skip, node_id=node.id),)


def _empty_latent(node: Node, ev: _Eval) -> tuple[Any, ...]:
    # ComfyUI's latent is width // 8 x height // 8, so the image is the size rounded down to 8.
    w, h = node.inputs["width"] // 8 * 8, node.inputs["height"] // 8 * 8
    return (EmptyLatent(w, h, node.inputs["batch_size"], node.id),)


def _load_bytes(node: Node, ev: _Eval) -> bytes:
    """The uploaded file LoadImage names: ``name``, ``sub/name`` or ``name [input]``."""
    value = str(node.inputs["image"])
    kind = "input"
    for k in ("input", "output", "temp"):
        if value.endswith(f" [{k}]"):
            value, kind = value[: -len(k) - 3], k
    sub, _, name = value.rpartition("/")
    try:
        return ev.env.load_input(name, sub or None, kind)
    except (FileNotFoundError, BadInput):
        raise _Refuse(node, "image", f"image - Invalid image file: {node.inputs['image']}",
                      "custom_validation_failed", "Custom validation failed for node") from None


def _decode(node: Node, ev: _Eval, data: bytes) -> Image.Image:
    try:
        return decode_image(data, "image", ev.env.max_pixels, "RGBA")
    except BadInput as e:
        raise _Refuse(node, "image", f"image: {e.detail}", "custom_validation_failed",
                      "Custom validation failed for node") from None


def _load_image(node: Node, ev: _Eval) -> tuple[Any, ...]:
    img = _decode(node, ev, _load_bytes(node, ev))
    # ComfyUI drops alpha for IMAGE (Pillow's convert) and makes MASK 1 - alpha.
    mask = Image.eval(img.getchannel("A"), lambda a: 255 - a) if "A" in img.getbands() else None
    pixels = Pixels(img.convert("RGB"), node.id)
    return pixels, (Mask(mask, node.id, "image") if mask is not None else _NoMask(node.id))


@dataclass(frozen=True)
class _NoMask:
    """LoadImage's MASK of an image without alpha: ComfyUI gives a 64x64 zero mask."""

    node_id: str


def _load_image_mask(node: Node, ev: _Eval) -> tuple[Any, ...]:
    img = _decode(node, ev, _load_bytes(node, ev))
    channel = node.inputs["channel"][0].upper()
    band = img.getchannel(channel)
    return (Mask(Image.eval(band, lambda a: 255 - a) if channel == "A" else band, node.id, "image"),)


_RESAMPLE = {"nearest-exact": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "area": Image.Resampling.BOX, "bicubic": Image.Resampling.BICUBIC,
             "lanczos": Image.Resampling.LANCZOS}


def _pixels_in(node: Node, ev: _Eval, name: str) -> Pixels:
    value = ev(node, name)
    if isinstance(value, Decoded):
        raise _Refuse(node, name, f"{name}: this image is generated by node {value.node_id}; feeding a generated "
                                  "image to another step (two-pass / hires graphs, post-scaling) needs the engine's "
                                  "hires or upscale support, which this server does not have yet")
    assert isinstance(value, Pixels)
    return value


def _scaled(img: Image.Image, method: str, width: int, height: int, crop: str) -> Image.Image:
    """ComfyUI's common_upscale: 0 keeps the aspect ratio, center crop to the target's first."""
    w, h = img.size
    if width == 0 and height == 0:
        return img
    if width == 0:
        width = max(1, round(w * height / h))
    elif height == 0:
        height = max(1, round(h * width / w))
    if crop == "center":
        old, new = w / h, width / height
        if old > new:
            x = round((w - w * (new / old)) / 2)
            img = img.crop((x, 0, w - x, h))
        elif old < new:
            y = round((h - h * (old / new)) / 2)
            img = img.crop((0, y, w, h - y))
    return img.resize((width, height), _RESAMPLE[method])


def _image_scale(node: Node, ev: _Eval) -> tuple[Any, ...]:
    px = _pixels_in(node, ev, "image")
    i = node.inputs
    return (Pixels(_scaled(px.image, i["upscale_method"], i["width"], i["height"], i["crop"]), px.node_id),)


def _image_scale_by(node: Node, ev: _Eval) -> tuple[Any, ...]:
    px = _pixels_in(node, ev, "image")
    w, h = px.image.size
    s = node.inputs["scale_by"]
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return (Pixels(px.image.resize(size, _RESAMPLE[node.inputs["upscale_method"]]), px.node_id),)


def _on_grid(img: Image.Image) -> Image.Image:
    """ComfyUI's VAE encode crops the image to multiples of 8, centred."""
    w, h = img.size
    x, y = w // 8 * 8, h // 8 * 8
    if (x, y) == (w, h):
        return img
    ox, oy = (w % 8) // 2, (h % 8) // 2
    return img.crop((ox, oy, ox + x, oy + y))


def _vae_in(node: Node, ev: _Eval) -> Vae:
    vae = ev(node, "vae")
    assert isinstance(vae, Vae)
    return vae


def _vae_encode(node: Node, ev: _Eval) -> tuple[Any, ...]:
    px = _pixels_in(node, ev, "pixels")
    return (Encoded(Pixels(_on_grid(px.image), px.node_id), _vae_in(node, ev), node.id),)


def _mask_in(node: Node, ev: _Eval, size: tuple[int, int]) -> Mask:
    mask = ev(node, "mask")
    if isinstance(mask, _NoMask):
        raise _Refuse(node, "mask", f"mask: the image of node {mask.node_id} has no alpha channel, so its mask is "
                                    "empty and nothing would be repainted; load a mask (LoadImageMask) or an image "
                                    "with transparency")
    assert isinstance(mask, Mask)
    img = mask.image if mask.image.size == size else mask.image.resize(size, Image.Resampling.BILINEAR)
    return replace(mask, image=img)


def _grow(mask: Image.Image, by: int) -> Image.Image:
    """ComfyUI's mask growth: a by x by box of ones convolved over the rounded mask, clamped
    (a dilation; an even box reaches one pixel further up and left), then rounded."""
    m = (np.asarray(mask, dtype=np.float32) / 255.0).round()
    if by == 0:
        return Image.fromarray((m * 255).astype(np.uint8), "L")
    pad = math.ceil((by - 1) / 2)
    h, w = m.shape
    padded = np.pad(m, pad)
    out = np.zeros((h, w), dtype=np.float32)
    for dy in range(by):  # the padded side is h + 2 * pad >= h + by - 1: every window is h x w
        for dx in range(by):
            np.maximum(out, padded[dy:dy + h, dx:dx + w], out=out)
    return Image.fromarray((out * 255).astype(np.uint8), "L")


def _vae_encode_inpaint(node: Node, ev: _Eval) -> tuple[Any, ...]:
    px = _pixels_in(node, ev, "pixels")
    image = _on_grid(px.image)
    mask = _mask_in(node, ev, px.image.size)
    mask = replace(mask, image=_on_grid(mask.image))
    # The masked pixels are set to grey before encoding: what was there is not kept.
    keep = (np.asarray(mask.image, dtype=np.float32) / 255.0).round()[..., None]
    rgb = np.asarray(image, dtype=np.float32) / 255.0
    grey = (rgb - 0.5) * (1.0 - keep) + 0.5
    filled = Image.fromarray(np.clip(grey * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")
    grown = replace(mask, image=_grow(mask.image, node.inputs["grow_mask_by"]))
    return (Encoded(Pixels(filled, px.node_id), _vae_in(node, ev), node.id, grown),)


def _set_noise_mask(node: Node, ev: _Eval) -> tuple[Any, ...]:
    latent = ev(node, "samples")
    if not isinstance(latent, Encoded):
        raise _Refuse(node, "samples", "samples: a noise mask needs an encoded image (VAEEncode) to keep the "
                                       "unmasked part of")
    return (replace(latent, mask=_mask_in(node, ev, latent.pixels.image.size), node_id=node.id),)


def _latent_upscale(node: Node, ev: _Eval, size: Callable[[int, int], tuple[int, int]]) -> tuple[Any, ...]:
    latent = ev(node, "samples")
    if isinstance(latent, Sampled) and "hires" in GenerationParams.model_fields and latent.hires is None \
            and latent.refiner is None and latent.stopped_at is None and isinstance(latent.latent, EmptyLatent):
        w, h = size(latent.latent.width, latent.latent.height)
        return (Upscaled(latent, w // 8 * 8, h // 8 * 8, node.inputs["upscale_method"], node.id),)
    if not isinstance(latent, EmptyLatent):
        raise _Refuse(node, "samples", "samples: upscaling a sampled or encoded latent is a second pass (hires fix); "
                                       "this server's engine has no hires support yet")
    # An empty latent is zeros at any size: upscaling it only changes the size.
    w, h = size(latent.width, latent.height)
    return (replace(latent, width=w // 8 * 8, height=h // 8 * 8),)


def _latent_upscale_to(node: Node, ev: _Eval) -> tuple[Any, ...]:
    def size(w: int, h: int) -> tuple[int, int]:
        tw, th = node.inputs["width"], node.inputs["height"]
        if tw == 0 and th == 0:
            return w, h
        tw, th = max(64, tw or round(w * th / h)), max(64, th or round(h * tw / w))
        if node.inputs["crop"] == "disabled" and isinstance(ev(node, "samples"), Sampled) and tw * h != th * w:
            # The engine's hires upscale covers the target and crops (A1111); stretching is not it.
            raise _Refuse(node, "crop", "crop: 'disabled' stretches the latent to another aspect ratio; sdserve's "
                                        "hires pass keeps the aspect and crops: use 'center' or the same aspect")
        return tw, th
    return _latent_upscale(node, ev, size)


def _latent_upscale_by(node: Node, ev: _Eval) -> tuple[Any, ...]:
    s = node.inputs["scale_by"]
    # ComfyUI scales the latent (side / 8) and rounds there.
    return _latent_upscale(node, ev, lambda w, h: (8 * round(w / 8 * s), 8 * round(h / 8 * s)))


def _conditioning(node: Node, ev: _Eval, name: str, model: Checkpoint) -> Conditioning:
    cond = ev(node, name)
    assert isinstance(cond, Conditioning)
    if cond.clip.checkpoint.spec.id != model.spec.id:
        raise _Refuse(node, name, f"{name}: encoded with the text encoder of {cond.clip.checkpoint.spec.id} but "
                                  f"sampled with {model.spec.id}; sdserve encodes prompts with the sampled model's "
                                  "own text encoder, so load both from one checkpoint")
    return cond


def _seed(value: int) -> int:
    """ComfyUI seeds are 64-bit, the engine's 32-bit: larger seeds are folded (mod 2**32)."""
    return value % (MAX_SEED + 1)


def _sampler_entry(node: Node) -> SchedulerEntry:
    try:
        return resolve_comfy(node.inputs["sampler_name"], node.inputs["scheduler"])
    except SamplerRefused as r:
        raise _Refuse(node, r.input_name, f"{r.input_name}: {r.message}") from None


def _partial(total: int, run: int) -> float:
    """The engine's strength that runs the last ``run`` of ``total`` steps (diffusers runs
    int(total * strength) of them)."""
    s = run / total
    while int(total * s) < run:
        s = math.nextafter(s, 2.0)
    return min(s, 1.0)


def _sampler(node: Node, ev: _Eval, seed_input: str, first: int, denoise: float | None) -> Sampled:
    """One pass: ``first`` skipped steps of ``steps`` (KSamplerAdvanced), or ComfyUI's denoise."""
    model = ev(node, "model")
    assert isinstance(model, Checkpoint)
    positive = _conditioning(node, ev, "positive", model)
    negative = _conditioning(node, ev, "negative", model)
    if positive.clip.loras != negative.clip.loras:
        raise _Refuse(node, "negative", "negative: encoded with a CLIP of other LoRAs than positive; one job encodes "
                                        "both prompts with one text encoder")
    if positive.clip.clip_skip != negative.clip.clip_skip:
        raise _Refuse(node, "negative", "negative: encoded with another CLIP last layer than positive; one job "
                                        "encodes both prompts with one encoder setting")
    if positive.control != negative.control:
        # The engine's ControlNet guides both halves of CFG (ComfyUI's ControlNetApplyAdvanced).
        raise _Refuse(node, "negative", "negative: sdserve applies a ControlNet to both prompts; pass positive and "
                                        "negative through the same ControlNetApplyAdvanced nodes")
    latent = ev(node, "latent_image")
    if positive.control and isinstance(latent, (Upscaled, Sampled)):
        raise _Refuse(node, "positive", "positive: a ControlNet on a second sampler pass (hires fix, refiner) is "
                                        "not available; apply it to the first pass only")
    if isinstance(latent, Upscaled):
        return _hires_pass(node, ev, latent, model, positive, negative, seed_input, denoise)
    if isinstance(latent, Sampled):
        raise _Refuse(node, "latent_image", "latent_image: a second sampler pass over a sampled latent (hires fix, "
                                            "refiner) needs the engine's hires support, which this server does not "
                                            "have yet")
    assert isinstance(latent, (EmptyLatent, Encoded))
    steps = node.inputs["steps"]
    strength_input = "denoise" if denoise is not None else "start_at_step"
    total, strength = steps, 1.0
    if denoise is not None and denoise <= 0.9999:
        # ComfyUI: the last `steps` sigmas of an int(steps / denoise)-step schedule.
        if denoise <= 0:
            raise _Refuse(node, "denoise", "denoise: 0 runs no step; use a value above 0")
        total = int(steps / denoise)
        strength = _partial(total, steps)
    elif first > 0:
        if first >= steps:
            raise _Refuse(node, "start_at_step", f"start_at_step: {first} of {steps} steps leaves none to run")
        strength = _partial(steps, steps - first)
    if strength < 1.0 and isinstance(latent, EmptyLatent):
        raise _Refuse(node, strength_input, f"{strength_input}: a partial pass over an empty latent is not "
                                            "available; it needs an input image (VAEEncode), or a full pass")
    if total > _MAX_STEPS:
        raise _Refuse(node, "steps", f"steps: {steps} steps at denoise {denoise} make a {total}-step schedule; "
                                     f"sdserve runs at most {_MAX_STEPS}")
    fields = {"model": (model.node_id, "ckpt_name"), "prompt": (positive.node_id, "text"),
              "negative_prompt": (negative.node_id, "text"), "steps": (node.id, "steps"),
              "guidance": (node.id, "cfg"), "seed": (node.id, seed_input), "scheduler": (node.id, "sampler_name"),
              "strength": (node.id, strength_input)}
    return Sampled(node, model, positive, negative, latent, _seed(node.inputs[seed_input]), total,
                   node.inputs["cfg"], _sampler_entry(node), strength, fields)


# ComfyUI's latent upscale methods as the engine's latent modes (engine.upscalers); "area" and
# "bislerp" have none.
_HIRES_MODES = {"bilinear": "Latent", "bicubic": "Latent (bicubic)", "nearest-exact": "Latent (nearest-exact)"}


def _hires_pass(node: Node, ev: _Eval, up: Upscaled, model: Checkpoint, positive: Conditioning,
                negative: Conditioning, seed_input: str, denoise: float | None) -> Sampled:
    """A KSampler over an upscaled first pass: the first pass's job with a hires pass (A1111's
    hires fix runs its steps on a schedule stretched to steps / strength: ComfyUI's denoise)."""
    first = up.sampled
    if first.positive.control:
        raise _Refuse(first.node, "positive", "positive: a ControlNet with a second sampler pass (hires fix) is not "
                                              "available; remove the second pass or the ControlNet")
    if denoise is None:
        raise _Refuse(node, "latent_image", "latent_image: the second pass of a hires graph is a KSampler with "
                                            "denoise (KSamplerAdvanced's step window has no hires equivalent)")
    if up.method not in _HIRES_MODES:
        raise _Refuse(up.node_id, "upscale_method", f"upscale_method: {up.method!r} has no engine latent mode; use "
                                                    f"{', '.join(_HIRES_MODES)}")
    same = {"seed": (_seed(node.inputs[seed_input]), first.seed), "cfg": (node.inputs["cfg"], first.guidance),
            "model": (model.loras, first.model.loras),
            "positive": (positive.clip.clip_skip, first.positive.clip.clip_skip)}
    for name, (mine, theirs) in same.items():
        if mine != theirs:
            what = {"seed": "seed", "cfg": "cfg", "model": "LoRAs", "positive": "CLIP last layer"}[name]
            raise _Refuse(node, seed_input if name == "seed" else name,
                          f"{seed_input if name == 'seed' else name}: the hires pass runs with the first pass's "
                          f"{what}; set it equal to the first KSampler's")
    if denoise <= 0:
        raise _Refuse(node, "denoise", "denoise: 0 runs no step; use a value above 0")
    entry = _sampler_entry(node)
    hires = {"upscaler": _HIRES_MODES[up.method], "resize_x": up.width, "resize_y": up.height,
             "steps": node.inputs["steps"], "strength": min(denoise, 1.0),
             "scheduler": None if entry.name == first.scheduler.name else entry.name,
             "model": None if model.spec.id == first.model.spec.id else model.spec.id,
             "prompt": None if positive.text == first.positive.text else positive.text,
             "negative_prompt": None if negative.text == first.negative.text else negative.text}
    fields = dict(first.fields) | {"hires": (node.id, "denoise")}
    return replace(first, hires=hires, last_model=model, fields=fields)


def _ksampler(node: Node, ev: _Eval) -> tuple[Any, ...]:
    return (_sampler(node, ev, "seed", 0, node.inputs["denoise"]),)


def _ksampler_advanced(node: Node, ev: _Eval) -> tuple[Any, ...]:
    i = node.inputs
    refiner = "refiner" in GenerationParams.model_fields
    if i["add_noise"] != "enable":
        latent = ev(node, "latent_image")
        if not refiner or not isinstance(latent, Sampled) or latent.stopped_at is None:
            raise _Refuse(node, "add_noise", "add_noise: a pass without fresh noise continues another sampler's "
                                             "latent; sdserve runs that only as an SDXL refiner finishing a "
                                             "KSamplerAdvanced that stopped early" + ("" if refiner else
                                             ", and this server's engine has no refiner yet"))
        return (_refiner_pass(node, ev, latent),)
    if i["end_at_step"] < i["steps"]:
        if not refiner or i["return_with_leftover_noise"] != "enable":
            raise _Refuse(node, "end_at_step", "end_at_step: a pass that stops early hands a noisy latent to a "
                                               "refiner (return_with_leftover_noise: enable)" + ("" if refiner else
                                               "; this server's engine has no refiner yet"))
        return (replace(_sampler(node, ev, "noise_seed", i["start_at_step"], None), stopped_at=i["end_at_step"]),)
    return (_sampler(node, ev, "noise_seed", i["start_at_step"], None),)


def _refiner_pass(node: Node, ev: _Eval, first: Sampled) -> Sampled:
    """KSamplerAdvanced without noise from where the first stopped to the end: the SDXL
    refiner (engine: Refiner(model, switch_at)), on the first pass's schedule and prompts."""
    i = node.inputs
    assert first.stopped_at is not None
    if first.positive.control:
        raise _Refuse(first.node, "positive", "positive: a ControlNet with an SDXL refiner pass is not available; "
                                              "remove the refiner or the ControlNet")
    model = ev(node, "model")
    assert isinstance(model, Checkpoint)
    checks = {"start_at_step": (i["start_at_step"], first.stopped_at), "steps": (i["steps"], first.steps),
              "cfg": (i["cfg"], first.guidance), "sampler_name": (_sampler_entry(node).name, first.scheduler.name)}
    for name, (mine, theirs) in checks.items():
        if mine != theirs:
            raise _Refuse(node, name, f"{name}: the refiner continues the first pass's schedule; set {name} to the "
                                      f"first KSamplerAdvanced's ({theirs})")
    if i["end_at_step"] < i["steps"]:
        raise _Refuse(node, "end_at_step", "end_at_step: the refiner finishes the schedule; set it to steps or more")
    for name, text in (("positive", first.positive.text), ("negative", first.negative.text)):
        cond = ev(node, name)
        assert isinstance(cond, Conditioning)
        if cond.text != text or cond.clip.checkpoint.spec.id != model.spec.id or cond.control:
            raise _Refuse(node, name, f"{name}: the refiner reads the first pass's prompts with its own CLIP; "
                                      "encode the same text with the refiner checkpoint's CLIP")
    if first.stopped_at <= 0 or first.stopped_at >= first.steps:
        raise _Refuse(node, "start_at_step", "start_at_step: the refiner must take over inside the schedule")
    refiner = {"model": model.spec.id, "switch_at": first.stopped_at / first.steps}
    return replace(first, stopped_at=None, refiner=refiner, last_model=model,
                   fields=dict(first.fields) | {"refiner": (node.id, "start_at_step")})


def _vae_key(vae: Vae) -> tuple[str | None, str | None]:
    return vae.file, vae.checkpoint.spec.id if vae.checkpoint is not None else None


def _vae_decode(node: Node, ev: _Eval) -> tuple[Any, ...]:
    latent = ev(node, "samples")
    if not isinstance(latent, Sampled):
        raise _Refuse(node, "samples", "samples: sdserve decodes the latent a sampler (KSampler) made; this latent "
                                       "was not sampled")
    if latent.stopped_at is not None:
        raise _Refuse(node, "samples", "samples: this latent still holds noise (its sampler stopped at "
                                       f"end_at_step {latent.stopped_at}); finish it with a refiner pass first")
    vae = _vae_in(node, ev)
    last = latent.last_model or latent.model
    if vae.checkpoint is not None and vae.checkpoint.spec.id != last.spec.id:
        raise _Refuse(node, "vae", f"vae: the VAE of {vae.checkpoint.spec.id} cannot decode a latent of "
                                   f"{last.spec.id}; load the sampled model's VAE or a VAE file (VAELoader)")
    if isinstance(latent.latent, Encoded) and _vae_key(latent.latent.vae) != _vae_key(vae):
        raise _Refuse(node, "vae", "vae: the image was encoded with another VAE than this one; one job encodes and "
                                   "decodes with one VAE")
    return (Decoded(latent, node.id, vae),)


def _addon(node: Node, ev: _Eval, kind: Any, input_name: str) -> str:
    """The add-on name (engine.addon_files) of the file a loader node names."""
    try:
        return ev.env.addons.find(kind, str(node.inputs[input_name]), field=input_name).name
    except BadInput as e:
        raise _Refuse(node, input_name, f"{input_name}: {e.detail}", "value_not_in_list", "Value not in list") from None


_MAX_LORA_WEIGHT = LoraRef.model_fields["weight"].metadata[1].le


def _lora_loader(node: Node, ev: _Eval) -> tuple[Any, ...]:
    model, clip = ev(node, "model"), ev(node, "clip")
    assert isinstance(model, Checkpoint) and isinstance(clip, Clip)
    name = _addon(node, ev, "lora", "lora_name")
    return (replace(model, loras=(*model.loras, (name, _strength(node, "strength_model"))), lora_node=node.id),
            replace(clip, loras=(*clip.loras, (name, _strength(node, "strength_clip")))))


def _lora_loader_model_only(node: Node, ev: _Eval) -> tuple[Any, ...]:
    """A LoRA on the UNet only: the job's LoRA gets text-encoder weight 0 (unless a CLIP
    LoraLoader of the same file gives it one)."""
    model = ev(node, "model")
    assert isinstance(model, Checkpoint)
    name = _addon(node, ev, "lora", "lora_name")
    return (replace(model, loras=(*model.loras, (name, _strength(node, "strength_model"))), lora_node=node.id),)


def _strength(node: Node, input_name: str) -> float:
    weight = float(node.inputs[input_name])
    if abs(weight) > _MAX_LORA_WEIGHT:  # ComfyUI's widget goes to 100; the engine's LoraRef does not
        raise _Refuse(node, input_name, f"{input_name}: {weight:g} is outside -{_MAX_LORA_WEIGHT:g} to "
                                        f"{_MAX_LORA_WEIGHT:g}, the LoRA weights sdserve applies")
    return weight


def _job_loras(model: Checkpoint, clip: Clip) -> tuple[dict[str, Any], ...]:
    """The job's LoRAs: per file the UNet weight (the sampled MODEL's loaders) and the text
    encoders' (the CLIP's), each 0 where that side has none; one file loaded twice adds up,
    as ComfyUI's patches do."""
    unet: dict[str, float] = {}
    te: dict[str, float] = {}
    for side, loras in ((unet, model.loras), (te, clip.loras)):
        for name, weight in loras:
            side[name] = side.get(name, 0.0) + weight
    out = []
    for name in dict.fromkeys([*unet, *te]):
        u, t = unet.get(name, 0.0), te.get(name, 0.0)
        if max(abs(u), abs(t)) > _MAX_LORA_WEIGHT:
            raise _Refuse(model.lora_node or clip.node_id, "lora_name", f"lora_name: {name} is loaded with a total "
                          f"strength beyond {_MAX_LORA_WEIGHT:g}, the most sdserve applies")
        out.append({"name": name, "weight": u} | ({} if t == u else {"text_encoder_weight": t}))
    return tuple(out)


def _vae_loader(node: Node, ev: _Eval) -> tuple[Any, ...]:
    return (Vae(None, _addon(node, ev, "vae", "vae_name"), node.id),)


def _upscale_model_loader(node: Node, ev: _Eval) -> tuple[Any, ...]:
    name = _addon(node, ev, "upscaler", "model_name")
    # ComfyUI upscales by the model's own factor; the engine reads it from the name as A1111
    # lists it (4 when the name does not say), then resizes the network's output to it.
    scale = find_upscaler(ev.env.addons, name, field="model_name").scale
    return (UpscaleModel(name, scale, node.id),)


def _image_upscale_with_model(node: Node, ev: _Eval) -> tuple[Any, ...]:
    model, image = ev(node, "upscale_model"), ev(node, "image")
    assert isinstance(model, UpscaleModel)
    if isinstance(image, Pixels):
        return (UpscaledPixels(image, model, node.id),)
    if not isinstance(image, Decoded) or image.upscale is not None:
        raise _Refuse(node, "image", "image: sdserve upscales a loaded image (LoadImage) or a sampler's decoded "
                                     "images (VAEDecode), once")
    return (replace(image, upscale=model, node_id=node.id),)


def _controlnet_loader(node: Node, ev: _Eval) -> tuple[Any, ...]:
    return (_addon(node, ev, "controlnet", "control_net_name"),)


_MAX_CONTROL_WEIGHT = ControlUnit.model_fields["weight"].metadata[1].le  # the engine's weight limit


def _controlnet_apply(node: Node, ev: _Eval) -> tuple[Any, ...]:
    """Both prompts guided by one ControlNet unit. The optional ``vae`` input only matters to
    ControlNets that read latents (SD3, Flux), which sdserve does not load; ComfyUI ignores it
    for the SD 1.5/SDXL ones too."""
    i = node.inputs
    pixels = ev(node, "image")
    if not isinstance(pixels, Pixels):
        raise _Refuse(node, "image", "image: sdserve takes a ControlNet's image from a LoadImage node")
    if i["strength"] > _MAX_CONTROL_WEIGHT:
        raise _Refuse(node, "strength", f"strength: {i['strength']} is above {_MAX_CONTROL_WEIGHT:g}, the most "
                                        "sdserve's ControlNet weight allows")
    if i["start_percent"] >= i["end_percent"]:
        raise _Refuse(node, "end_percent", "end_percent: the ControlNet would guide no step; set it above "
                                           "start_percent")
    unit = ControlUnit(model=ev(node, "control_net"), weight=i["strength"], guidance_start=i["start_percent"],
                       guidance_end=i["end_percent"], preprocessor="none")
    control = Control(unit, pixels, node.id)
    positive, negative = ev(node, "positive"), ev(node, "negative")
    assert isinstance(positive, Conditioning) and isinstance(negative, Conditioning)
    return (replace(positive, control=(*positive.control, control)),
            replace(negative, control=(*negative.control, control)))


def _output(node: Node, ev: _Eval) -> tuple[Any, ...]:
    return ()  # output nodes are read by compile_prompt, never linked from


COMPILERS: dict[str, Compiler] = {
    "CheckpointLoaderSimple": _checkpoint,
    "CLIPTextEncode": _clip_text,
    "CLIPSetLastLayer": _clip_last_layer,
    "EmptyLatentImage": _empty_latent,
    "KSampler": _ksampler,
    "KSamplerAdvanced": _ksampler_advanced,
    "VAEDecode": _vae_decode,
    "VAEEncode": _vae_encode,
    "VAEEncodeForInpaint": _vae_encode_inpaint,
    "SetLatentNoiseMask": _set_noise_mask,
    "LoadImage": _load_image,
    "LoadImageMask": _load_image_mask,
    "SaveImage": _output,
    "PreviewImage": _output,
    "LatentUpscale": _latent_upscale_to,
    "LatentUpscaleBy": _latent_upscale_by,
    "ImageScale": _image_scale,
    "ImageScaleBy": _image_scale_by,
    # Available once the engine has their field (nodes.py ``needs``: node_available).
    "LoraLoader": _lora_loader,
    "LoraLoaderModelOnly": _lora_loader_model_only,
    "VAELoader": _vae_loader,
    "UpscaleModelLoader": _upscale_model_loader,
    "ImageUpscaleWithModel": _image_upscale_with_model,
    "ControlNetLoader": _controlnet_loader,
    "ControlNetApplyAdvanced": _controlnet_apply,
}


# ---- jobs -----------------------------------------------------------------------------

def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _output_node(node: Node) -> OutputNode:
    if node.class_type == "SaveImage":
        return OutputNode(node.id, "output", node.inputs.get("filename_prefix", "ComfyUI"))
    # PreviewImage: ComfyUI's temp prefix with five random letters.
    suffix = "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))
    return OutputNode(node.id, "temp", f"ComfyUI_temp_{suffix}")


def _jobs(decoded: Decoded, outputs: tuple[OutputNode, ...]) -> list[CompiledJob]:
    s = decoded.sampled
    fields = dict(s.fields)
    base: dict[str, Any] = dict(
        model=s.model.spec.id, prompt=s.positive.text, negative_prompt=s.negative.text, steps=s.steps,
        guidance=s.guidance, scheduler=s.scheduler.name, seed=s.seed, prompt_syntax="comfyui")
    if s.hires is not None:  # only reachable when the engine has the field (_latent_upscale)
        base["hires"] = s.hires
    if s.refiner is not None:  # likewise (_ksampler_advanced)
        base["refiner"] = s.refiner
    if s.model.loras or s.positive.clip.loras:  # LoraLoader / LoraLoaderModelOnly
        base["loras"] = _job_loras(s.model, s.positive.clip)
        fields["loras"] = (s.model.lora_node or s.positive.clip.node_id, "lora_name")
    if decoded.upscale is not None:  # ImageUpscaleWithModel after the decode
        base["upscale"] = UpscaleSettings(upscaler=decoded.upscale.name, scale=decoded.upscale.scale)
        fields["upscale.upscaler"] = fields["upscale.scale"] = (decoded.upscale.node_id, "model_name")
    if s.positive.control:  # ControlNetApplyAdvanced: unit i's image is control input i
        base["control"] = tuple(c.unit for c in s.positive.control)
        control_inputs = tuple(InputImage(role="control", index=n, data=_png(c.pixels.image))
                               for n, c in enumerate(s.positive.control))
        for n, c in enumerate(s.positive.control):
            fields[f"control[{n}].model"] = (c.node_id, "control_net")
            fields[f"control[{n}].image"] = (c.pixels.node_id, "image")
    else:
        control_inputs = ()
    if decoded.vae.file is not None:  # likewise (VAELoader's needs)
        base["vae"] = decoded.vae.file
        fields["vae"] = (decoded.vae.node_id, "vae_name")
    if s.positive.clip.clip_skip != 1:  # only reachable when the engine has the field
        base["clip_skip"] = s.positive.clip.clip_skip
        fields["clip_skip"] = (s.positive.clip.node_id, "stop_at_clip_layer")
    latent = s.latent
    if isinstance(latent, EmptyLatent):
        fields.update(width=(latent.node_id, "width"), height=(latent.node_id, "height"),
                      n=(latent.node_id, "batch_size"))
        out = []
        for first in range(0, latent.batch, _MAX_N):
            n = min(_MAX_N, latent.batch - first)
            params = GenerationParams(**base | {"seed": _seed(s.seed + first)}, task="txt2img", width=latent.width,
                                      height=latent.height, n=n, strength=1.0, inputs=control_inputs)
            out.append(CompiledJob(params, outputs, fields))
        return out
    img = latent.pixels.image
    inputs = [InputImage(role="init", data=_png(img))]
    fields.update(image=(latent.pixels.node_id, "image"), width=(latent.pixels.node_id, "image"),
                  height=(latent.pixels.node_id, "image"))
    task: Literal["img2img", "inpaint"] = "img2img"
    if latent.mask is not None:
        inputs.append(InputImage(role="mask", data=_png(latent.mask.image)))
        fields["mask"] = (latent.mask.node_id, latent.mask.input_name)
        task = "inpaint"
    params = GenerationParams(**base, task=task, width=img.width, height=img.height, strength=s.strength,
                              inputs=(*inputs, *control_inputs))
    return [CompiledJob(params, outputs, fields)]


def _upscale_job(up: UpscaledPixels, outputs: tuple[OutputNode, ...], catalog: Catalog) -> CompiledJob:
    """ImageUpscaleWithModel over a LoadImage: the engine's task "upscale" (no sampler; the
    job names a model only because every job has one, as A1111's extras jobs do)."""
    params = GenerationParams(model=next(iter(catalog)).id, prompt="", task="upscale", inputs=(InputImage(role="init", data=_png(up.pixels.image)),),
                              upscale=UpscaleSettings(upscaler=up.model.name, scale=up.model.scale))
    fields = {"image": (up.pixels.node_id, "image"), "upscale.upscaler": (up.model.node_id, "model_name"),
              "upscale.scale": (up.model.node_id, "model_name")}
    return CompiledJob(params, outputs, fields)


def compile_prompt(prompt: dict[str, Any], env: CompileEnv) -> CompiledJobs:
    """The jobs that make the prompt's valid output images, in output-node order, with the
    invalid outputs' ``node_errors`` (ComfyUI runs the valid outputs of a graph); GraphError
    (ComfyUI's 400 body) when no output is valid, or when the graph asks what the engine
    cannot do (``unsupported_graph``: ComfyUI would run it, so it is refused, not dropped)."""
    graph = validate_prompt(prompt, env)
    ev = _Eval(graph, env)
    by_decode: dict[str, tuple[Decoded | UpscaledPixels, list[OutputNode]]] = {}
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = copy.deepcopy(graph.node_errors)
    refused = False
    for out_id in graph.outputs:
        node = graph.nodes[out_id]
        try:
            images = ev(node, "images")
            if not isinstance(images, (Decoded, UpscaledPixels)):
                raise _Refuse(node, "images", "images: sdserve saves images a sampler made (KSampler -> VAEDecode); "
                                              "these come from a loaded image with no sampler in between")
        except _Refuse as r:
            entry = node_errors.setdefault(r.node_id, {"errors": [r.item], "dependent_outputs": [],
                                                       "class_type": graph.nodes[r.node_id].class_type})
            entry["dependent_outputs"].append(out_id)
            failed.append((out_id, [r.item] if r.node_id == out_id else []))
            refused = refused or r.item["type"] == "unsupported_graph"
            continue
        by_decode.setdefault(images.node_id, (images, []))[1].append(_output_node(node))
    if refused or not by_decode:
        raise outputs_failed(failed, node_errors)
    return CompiledJobs([job for decoded, outs in by_decode.values()
                         for job in (_jobs(decoded, tuple(outs)) if isinstance(decoded, Decoded)
                                     else [_upscale_job(decoded, tuple(outs), env.catalog)])], node_errors)


def node_errors_for(err: BadInput, job: CompiledJob) -> GraphError:
    """An engine BadInput at submit (prepare's checks) as ComfyUI's 400, on the node and
    input the field came from (the first output's node when the field has no source)."""
    node_id, input_name = job.fields.get(err.field, (job.outputs[0].node_id, err.field))
    item = error_item("value_not_valid", "Value not valid", f"{input_name}: {err.detail}", input_name=input_name)
    return GraphError(error_item("prompt_outputs_failed_validation", "Prompt outputs failed validation", ""),
                      {node_id: {"errors": [item], "dependent_outputs": [o.node_id for o in job.outputs],
                                 "class_type": ""}})


def object_info(env: CompileEnv) -> dict[str, Any]:
    """GET /object_info: the nodes this server runs, with their inputs and options filled."""
    out: dict[str, Any] = {}
    for name, d in NODES.items():
        if node_available(d) is not None:
            continue
        required = {n: i.spec(env) for n, i in d.inputs if not i.optional}
        optional = {n: i.spec(env) for n, i in d.inputs if i.optional}
        inputs: dict[str, Any] = {"required": required}
        order: dict[str, list[str]] = {"required": list(required)}
        if optional:
            inputs["optional"] = optional
            order["optional"] = list(optional)
        if d.output_node and name == "SaveImage":
            inputs["hidden"] = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
        out[name] = {
            "input": inputs, "input_order": order, "output": list(d.outputs),
            "output_is_list": [False] * len(d.outputs), "output_name": list(d.output_names or d.outputs),
            "name": name, "display_name": d.display_name, "description": d.description,
            "python_module": "nodes", "category": d.category, "output_node": d.output_node,
        }
    return out
