"""GenerationParams: the ONE internal request type every dialect translates into.

Torch-free on purpose: the service stores these in its job table and the API layer builds
them, neither of which may import torch.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .hires import HiresFix, Refiner
from .outpaint import Outpaint
from .sd_upscale import SDUpscale

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from .catalog import ModelSpec

__all__ = [
    "Task",
    "ModelTask",
    "OutputFormat",
    "InputRole",
    "PromptSyntax",
    "SafetyMode",
    "EnhanceMode",
    "InputImage",
    "ControlUnit",
    "IPAdapterUnit",
    "ControlMode",
    "ResizeMode",
    "input_images",
    "LoraRef",
    "EmbeddingRef",
    "normal_loras",
    "PER_ROW",
    "PerRow",
    "per_row_fields",
    "GenerationParams",
    "UpscaleSettings",
    "FaceRestoration",
    "GenerationResult",
    "StepInfo",
    "MAX_SEED",
    "random_seed",
    "BatchItem",
    "batch_key",
]

Task = Literal["txt2img", "img2img", "inpaint", "upscale"]
# What a model's denoising loop does (a catalog entry's tasks); "upscale" is the init image
# resized by an upscaler (engine.upscalers), with no loop and no model.
ModelTask = Literal["txt2img", "img2img", "inpaint"]
OutputFormat = Literal["png", "jpeg", "webp"]
# What an input image is for. Add-ons add roles (``control``, ``ip_adapter``, ...); the store
# keeps one row per (job, role, index), so a new role needs no new column or migration.
InputRole = Literal["init", "mask", "control", "ip_adapter"]
# How a prompt is read: "a1111" is AUTOMATIC1111's syntax (weights, BREAK, chunks beyond 75
# tokens; engine.prompt_syntax), "plain" is text as the hosted services read it (truncated
# at the encoder's 75 tokens, with a warning).
# "comfyui" is ComfyUI's: (word:1.2) weights interpolated from the empty prompt's embedding,
# 75-token chunks that keep short weighted segments whole (engine.prompt_syntax, prompt_encoding).
PromptSyntax = Literal["plain", "a1111", "comfyui"]
# What a flagged image becomes (engine.auxiliary.filters); ModelsLab's safety_checker_type.
SafetyMode = Literal["black", "blur", "pixelate"]
# Prompt enhancement: "on" needs the server's enhancer (a 4xx without it); "auto" uses it
# when the server has one and says so in the warnings when not (ModelsLab's default "yes").
EnhanceMode = Literal["off", "on", "auto"]

# Seeds are drawn below 2**32 so they survive every dialect's integer type (A1111 and
# ModelsLab clients store them in 32-bit fields) and seed+i for a batch stays in range.
MAX_SEED = 2**32 - 1


def random_seed() -> int:
    """A fresh seed for a request that did not bring one."""
    return secrets.randbelow(MAX_SEED - 16)


class PerRow:
    """Field marker: the value may differ between the requests that share one denoising loop.

    Every field of GenerationParams WITHOUT this marker is part of :func:`batch_key`, so a
    new field is kept apart by default: forgetting to think about batching can cost speed,
    never someone else's image. Mark a field per row only when the loop takes one value per
    image (prompts, seeds, input images) or when it is applied after the loop.
    """

    def __repr__(self) -> str:
        return "PerRow()"


PER_ROW = PerRow()


class InputImage(BaseModel):
    """One input image of a request, by role (encoded bytes; PNG after a dialect re-encodes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: InputRole
    data: bytes
    # Several images of one role (e.g. one per ControlNet unit) are told apart by index.
    index: int = Field(default=0, ge=0)


def input_images(init: bytes | None = None, mask: bytes | None = None) -> tuple[InputImage, ...]:
    """``GenerationParams.inputs`` for an init image and a mask (None: not given)."""
    roles: tuple[tuple[InputRole, bytes | None], ...] = (("init", init), ("mask", mask))
    return tuple(InputImage(role=role, data=b) for role, b in roles if b is not None)


class UpscaleSettings(BaseModel):
    """Resizing by an upscaler (engine.upscalers; checked in engine.upscalers.checks).

    The whole job when the task is "upscale" (the init image; no denoising loop), else
    applied to each image after the loop (ModelsLab's ``upscale`` on a generation).
    A1111's extras semantics: by ``scale``, or to ``width`` x ``height`` by the larger of
    the two ratios and then, with ``crop``, centred on a canvas of exactly that size.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    upscaler: str = "Lanczos"
    scale: float | None = None
    width: int | None = None
    height: int | None = None
    crop: bool = False
    # Blended over the first upscaler's result with this weight (A1111's "Upscaler 2").
    upscaler_2: str | None = None
    upscaler_2_visibility: float = 0.0
    # Output sides rounded down to a multiple of this (A1111's upscalers round to 8).
    grid: int = 1


class FaceRestoration(BaseModel):
    """One face-restoration step (engine.faces): faces found, aligned, restored by ``model``
    and pasted back, then the result blended over the image with ``visibility`` (A1111's
    extras sliders; 1 for ``restore_faces`` on a generation). Checked in engine.faces."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "GFPGAN"
    visibility: float = Field(default=1.0, ge=0, le=1)
    # CodeFormer's fidelity weight (0: most restoration, 1: closest to the input).
    weight: float = Field(default=0.5, ge=0, le=1)


# ControlNet: how a unit's guidance weighs against the prompt (A1111's three modes; "control"
# is diffusers' guess_mode: the ControlNet acts on the conditional half only, with its
# residuals scaled up from 0.1 at the shallowest block to 1 at the middle).
ControlMode = Literal["balanced", "prompt", "control"]
# How a control image of another aspect is fitted to the output (A1111's names).
ResizeMode = Literal["just_resize", "crop_and_resize", "resize_and_fill"]


class ControlUnit(BaseModel):
    """One ControlNet unit: its model and settings (shared by a batch: part of its key).

    The unit's control image is a per-row input (role "control", index = the unit's position
    in ``GenerationParams.control``), so requests with equal settings share a loop.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A ControlNet in the add-on folder ``ControlNet/`` (file name without suffix, or folder).
    model: str
    weight: float = Field(default=1.0, ge=0, le=2)
    guidance_start: float = Field(default=0.0, ge=0, le=1)
    guidance_end: float = Field(default=1.0, ge=0, le=1)
    control_mode: ControlMode = "balanced"
    # engine.preprocessors: what turns the sent image into the control image ("none": as sent).
    preprocessor: str = "none"
    resize_mode: ResizeMode = "crop_and_resize"
    # The preprocessor's working resolution (shorter side), as A1111's processor_res.
    processor_res: int = Field(default=512, ge=64, le=4096)
    # Preprocessor parameters (canny: low/high thresholds; threshold: level), None = its default.
    threshold_a: float | None = None
    threshold_b: float | None = None


class IPAdapterUnit(BaseModel):
    """An IP-Adapter (image prompt): its model and scale (part of the batch key); the image
    is a per-row input of role "ip_adapter"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # An IP-Adapter file in the add-on folder ``ipadapter/`` (its image encoder beside it).
    model: str
    scale: float = Field(default=1.0, ge=0, le=2)


class LoraRef(BaseModel):
    """A LoRA applied to a request: its add-on name (``engine.addon_files``) and weight.

    ``sha256`` is filled by ``prepare`` from the file (A1111's "Lora hashes" provenance), so
    a changed file is a different key and is loaded again, never mixed up with the old one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    weight: float = Field(default=1.0, ge=-10, le=10)
    sha256: str = ""
    # The text encoders' weight when it differs from the UNet's (``weight``): A1111's
    # <lora:name:te:unet>, ComfyUI's strength_clip (0: LoraLoaderModelOnly). None: ``weight``.
    text_encoder_weight: float | None = Field(default=None, ge=-10, le=10)

    @property
    def te_weight(self) -> float:
        return self.weight if self.text_encoder_weight is None else self.text_encoder_weight


def normal_loras(loras: tuple[LoraRef, ...] | list[LoraRef]) -> tuple[LoraRef, ...]:
    """``loras`` sorted by name, so equal sets give equal batch keys (order does not matter to
    the sum of their deltas)."""
    return tuple(sorted(loras, key=lambda r: (r.name, r.weight, r.te_weight)))


class EmbeddingRef(BaseModel):
    """A textual-inversion embedding a prompt uses by name (A1111: the file name as a word)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    sha256: str = ""


class GenerationParams(BaseModel):
    """What to generate, in sdserve's own terms.

    Optional fields are ``None`` until :meth:`resolve` fills them from the model's family
    defaults; the service stores the resolved copy, so a job records what actually ran.
    Images travel as encoded bytes in ``inputs`` (by role) so the type stays serialisable;
    :func:`input_images` builds them from an init image and a mask.

    Fields marked ``PER_ROW`` may differ inside a batch; every other field is part of the
    batch key (see :class:`PerRow`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    # None: follows from the inputs (mask -> inpaint, image -> img2img, none -> txt2img).
    task: Task | None = None
    prompt: Annotated[str, PER_ROW]
    negative_prompt: Annotated[str, PER_ROW] = ""
    # Per row: each row's prompts are encoded on their own (engine.prompt_encoding).
    prompt_syntax: Annotated[PromptSyntax, PER_ROW] = "plain"
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    seed: Annotated[int | None, PER_ROW] = Field(default=None, ge=0, le=MAX_SEED)
    n: Annotated[int, PER_ROW] = Field(default=1, ge=1, le=16)
    scheduler: str | None = None
    inputs: Annotated[tuple[InputImage, ...], PER_ROW] = ()
    output_format: Annotated[OutputFormat, PER_ROW] = "png"
    # Upscaling: the job itself (task "upscale") or after the loop (see UpscaleSettings).
    upscale: UpscaleSettings | None = None
    # Seamless tiling (A1111 "tiling"): circular padding in the UNet and VAE for this loop.
    tiling: bool = False
    # ControlNet units (engine.control); their images are inputs of role "control".
    control: tuple[ControlUnit, ...] = ()
    # IP-Adapter (engine.ip_adapters); its image is the input of role "ip_adapter".
    ip_adapter: IPAdapterUnit | None = None
    # LoRAs (engine.lora_adapters): one adapter set per loop, so shared. A1111 <lora:...> tags
    # are moved in here by prepare. Sorted by name (normal_loras).
    loras: tuple[LoraRef, ...] = ()
    # Textual-inversion embeddings the prompts use (found by prepare): per row, since each
    # row's prompts are encoded on their own and an embedding only adds tokens.
    embeddings: Annotated[tuple[EmbeddingRef, ...], PER_ROW] = ()
    # Clip skip in A1111's numbering: 1 conditions on the text encoder's last layer (SDXL: its
    # own penultimate, as always), 2 on the layer before, ... (diffusers' ``clip_skip`` counts
    # layers skipped: ours minus one). Shared by a loop: the encoders run once per call.
    clip_skip: int = Field(default=1, ge=1, le=12)
    # A VAE from the add-on folders (``engine.addons`` name) decoding this request instead of
    # the model's own; None: the model's. One VAE per loop.
    vae: str | None = None
    # Multi-pass generation (engine.hires): a second img2img pass at a larger size, and the
    # SDXL refiner finishing the schedule. Part of the batch key: every pass is shared.
    hires: HiresFix | None = None
    refiner: Refiner | None = None
    # -- safety checker and prompt enhancer (engine.auxiliary, docs/safety.md) --
    # The checker runs on each image after the loop, and the enhancer before it: per row.
    safety_check: Annotated[bool, PER_ROW] = False
    safety_mode: Annotated[SafetyMode, PER_ROW] = "black"
    enhance_prompt: Annotated[EnhanceMode, PER_ROW] = "off"
    # The prompt as sent, once the enhancer has rewritten ``prompt`` (None: not rewritten).
    original_prompt: Annotated[str | None, PER_ROW] = None
    # Outpainting (engine.outpaint): the init image padded by these margins and the border
    # inpainted; prepare makes the padded image and the mask, so the job is an inpaint job.
    # Per row: it changes only the row's input images and the pixels kept after the loop.
    outpaint: Annotated[Outpaint | None, PER_ROW] = None
    # A1111's "SD upscale" script (engine.sd_upscale): the init image upscaled, then img2img
    # tile by tile at width x height; the engine runs the tiles as rows of its batch.
    sd_upscale: SDUpscale | None = None
    # Face restoration steps, in order, on each image after the VAE decode (a generation:
    # before the safety checker) or after the upscale (an "upscale" job). Per row: applied
    # to each request's own images after the shared loop.
    face_restoration: Annotated[tuple[FaceRestoration, ...], PER_ROW] = ()

    def input(self, role: InputRole, index: int = 0) -> bytes | None:
        """The bytes of the input image with ``role`` (and ``index``), or None."""
        return next((i.data for i in self.inputs if i.role == role and i.index == index), None)

    @property
    def init_image(self) -> bytes | None:
        return self.input("init")

    @property
    def mask_image(self) -> bytes | None:
        return self.input("mask")

    @property
    def inferred_task(self) -> Task:
        """``task``, or what the inputs imply when it was left out."""
        if self.task is not None:
            return self.task
        if self.mask_image is not None or (self.outpaint is not None and self.init_image is not None):
            return "inpaint"
        return "img2img" if self.init_image is not None else "txt2img"

    def resolve(self, spec: ModelSpec) -> GenerationParams:
        """A copy with every default filled from ``spec`` and a seed drawn if missing."""
        d = spec.defaults
        task = self.inferred_task
        # ``is None``, not ``or``: a 0 the caller sent is theirs to be told about (the engine
        # rejects it), not silently replaced by a default.
        return self.model_copy(
            update={
                "model": spec.id,
                "task": task,
                "width": d.width if self.width is None else self.width,
                "height": d.height if self.height is None else self.height,
                "steps": d.steps if self.steps is None else self.steps,
                "guidance": d.guidance if self.guidance is None else self.guidance,
                "strength": (1.0 if task == "txt2img" else d.strength)
                if self.strength is None
                else self.strength,
                "scheduler": self.scheduler or d.scheduler,
                "seed": random_seed() if self.seed is None else self.seed,
            }
        )

    @property
    def seeds(self) -> list[int]:
        """One seed per image: seed, seed+1, ... (wrapping below 2**32)."""
        base = self.seed or 0
        return [(base + i) % (MAX_SEED + 1) for i in range(self.n)]

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the images made: the hires pass's target when there is one."""
        w, h = self.width or 0, self.height or 0
        if self.hires is None or not w or not h:
            return w, h
        t = self.hires.target(w, h)
        return t.width, t.height

    def summary(self) -> dict[str, Any]:
        """The parameters without image bytes, for logs, metadata and job records."""
        out = self.model_dump(exclude={"inputs"})
        # Image bytes are kept apart from stored params (and dropped when a job ends), so
        # the task, which requires them, also counts: a job read back still shows its inputs.
        task = self.inferred_task
        out["has_init_image"] = self.init_image is not None or task in ("img2img", "inpaint", "upscale")
        out["has_mask_image"] = self.mask_image is not None or task == "inpaint"
        return out


@functools.cache
def per_row_fields(cls: type[GenerationParams] = GenerationParams) -> frozenset[str]:
    """The fields of ``cls`` marked ``PER_ROW`` (the rest make up the batch key)."""
    return frozenset(name for name, f in cls.model_fields.items() if any(isinstance(m, PerRow) for m in f.metadata))


def _hashable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return (type(value).__name__, *(_hashable(v) for _, v in value))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def batch_key(p: GenerationParams) -> tuple[Any, ...]:
    """Requests with equal keys can share one denoising loop (see ``engine.batching``).

    Derived from the field declarations: every field not marked ``PER_ROW`` (model, task,
    size, steps, scheduler, strength, guidance, and any field added later), plus whether a
    negative prompt is given: the negative prompt itself is per row, but SDXL encodes "none"
    as zeros, not as the empty string. Torch-free, so the service's worker can group queued
    jobs without importing the engine's runtime.
    """
    per_row = per_row_fields(type(p))
    shared = tuple((name, _hashable(getattr(p, name))) for name in type(p).model_fields if name not in per_row)
    return (*shared, ("has_negative_prompt", bool(p.negative_prompt)))


@dataclass(frozen=True)
class StepInfo:
    """Progress of one denoising loop, passed to ``on_step`` after each step."""

    step: int
    total: int
    # Called lazily: building a preview costs a decode, so only consumers that want one pay.
    preview: Any = None


@dataclass
class GenerationResult:
    """What the engine made for one GenerationParams: one image and seed per output."""

    params: GenerationParams
    images: list[Image]
    seeds: list[int]
    device: str
    dtype: str
    timings: dict[str, float] = field(default_factory=dict)
    # What the caller should know about how the request was read (e.g. a truncated prompt).
    warnings: list[str] = field(default_factory=list)
    # Infotext entries only the engine knows (A1111's "Model hash", "VAE", "VAE hash").
    provenance: dict[str, str] = field(default_factory=dict)
    # Per image, whether the safety checker flagged it (None: the checker did not run).
    nsfw: list[bool] | None = None


@dataclass
class BatchItem:
    """One request for ``Engine.generate_batch``, with its own progress and cancel hooks.

    ``images`` is filled by the engine: ``params``' inputs decoded and sized, by role.
    """

    params: GenerationParams
    images: dict[str, Image] = field(default_factory=dict)
    on_step: Callable[[StepInfo], None] | None = None
    cancel: Callable[[], bool] | None = None
    # True once the caller wants the loop stopped but its images kept (A1111's interrupt):
    # the images are decoded from where the loop stands.
    interrupt: Callable[[], bool] | None = None
