"""Hires fix and refiner as request fields, torch-free (the service stores and batches them).

Hires fix is AUTOMATIC1111's two-pass txt2img: generate at the request's size, upscale
(the latents by interpolation, or the decoded image by an image upscaler), then run img2img
over the upscaled result at ``denoising_strength``. The target size follows A1111 1.10's
``calculate_target_resolution``: ``scale`` times the first pass, or ``resize_x``/``resize_y``
(one of them: the other keeps the aspect ratio; both: upscale to cover, then crop the
latents to the box). The refiner is SDXL's base/refiner split: the base denoises up to
``switch_at`` of the schedule and the refiner model finishes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from .upscalers import LATENT_UPSCALE_MODES

if TYPE_CHECKING:  # pragma: no cover
    from .params import GenerationParams

__all__ = ["HiresFix", "Refiner", "hires_steps", "hires_pass_params", "infotext_fields", "LATENT_MODES", "HiresTarget", "DEFAULT_HIRES_STRENGTH", "MAX_HIRES_SCALE"]

# A1111's latent upscale modes (engine.upscalers keeps the one table).
LATENT_MODES = LATENT_UPSCALE_MODES
# A1111's txt2img denoising_strength default (the hires pass's strength).
DEFAULT_HIRES_STRENGTH = 0.75
MAX_HIRES_SCALE = 8.0


class HiresTarget(BaseModel):
    """Where the second pass runs: upscale to ``upscale_*``, then crop ``crop_*`` latent rows
    and columns (half before, half after) to land on ``width`` x ``height``."""

    upscale_width: int
    upscale_height: int
    width: int
    height: int

    @property
    def crop_x(self) -> int:
        return (self.upscale_width - self.width) // 8

    @property
    def crop_y(self) -> int:
        return (self.upscale_height - self.height) // 8


class HiresFix(BaseModel):
    """A second, img2img pass at a larger size over the first pass's result."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Scale of the first pass's size; used when neither resize side is given (A1111 hr_scale).
    scale: float = Field(default=2.0, gt=0, le=MAX_HIRES_SCALE)
    # Target sides (0: not given); A1111 hr_resize_x / hr_resize_y.
    resize_x: int = Field(default=0, ge=0)
    resize_y: int = Field(default=0, ge=0)
    # A latent mode (LATENT_MODES) or an image upscaler's name (engine.upscalers: built-ins and
    # model files).
    upscaler: str = "Latent"
    # Denoising steps of the second pass; None (A1111's 0): the first pass's steps.
    steps: int | None = Field(default=None, ge=1, le=200)
    strength: float = Field(default=DEFAULT_HIRES_STRENGTH, gt=0, le=1)
    # None: the first pass's scheduler / model / prompts.
    scheduler: str | None = None
    model: str | None = None
    prompt: str | None = None
    negative_prompt: str | None = None

    @property
    def latent_mode(self) -> tuple[str, bool] | None:
        """(interpolate mode, antialias) for a latent upscaler; None for an image upscaler."""
        return LATENT_MODES.get(self.upscaler)

    def target(self, width: int, height: int) -> HiresTarget:
        """A1111's ``calculate_target_resolution`` for a first pass of ``width`` x ``height``;
        the sides land on the 8-px latent grid as A1111's do (latent = side // 8)."""
        rx, ry = self.resize_x, self.resize_y
        if rx == 0 and ry == 0:
            up_w, up_h = int(width * self.scale), int(height * self.scale)
            out_w, out_h = up_w, up_h
        elif ry == 0:
            up_w, up_h = rx, rx * height // width
            out_w, out_h = up_w, up_h
        elif rx == 0:
            up_w, up_h = ry * width // height, ry
            out_w, out_h = up_w, up_h
        else:
            if width / height < rx / ry:
                up_w, up_h = rx, rx * height // width
            else:
                up_w, up_h = ry * width // height, ry
            out_w, out_h = rx, ry
        # A1111: latents of side // 8, less (upscaled - target) // 8 cropped latent cells.
        crop_x, crop_y = (up_w - out_w) // 8, (up_h - out_h) // 8
        up_w, up_h = up_w // 8 * 8, up_h // 8 * 8
        return HiresTarget(upscale_width=up_w, upscale_height=up_h, width=up_w - 8 * crop_x,
                           height=up_h - 8 * crop_y)


class Refiner(BaseModel):
    """SDXL refiner: ``model`` finishes the schedule from ``switch_at`` (0-1) on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    switch_at: float = Field(default=0.8, gt=0, lt=1)


def hires_steps(p: GenerationParams) -> int:
    """Denoising steps of the hires pass: its own, or (A1111's 0) the first pass's."""
    assert p.hires is not None and p.steps is not None
    return p.hires.steps or p.steps


def _schedule_for(steps: int, strength: float) -> tuple[int, float]:
    """A1111 runs exactly ``steps`` steps in its hires pass, on a schedule stretched to
    ``steps / strength`` (sd_samplers_common.setup_img2img_steps). diffusers runs
    int(schedule x strength) steps, so the strength given to it is nudged to land on that
    count: the same start point in the same schedule."""
    schedule = max(steps, int(steps / min(strength, 0.999)))
    return schedule, min(1.0, (steps + 0.5) / schedule)


def hires_pass_params(p: GenerationParams) -> GenerationParams:
    """The hires pass of a resolved request as a request of its own: img2img at the target
    size, with the hires steps, strength, scheduler, model and prompts (each defaulting to
    the first pass's)."""
    h = p.hires
    assert h is not None and p.width and p.height
    t = h.target(p.width, p.height)
    schedule, strength = _schedule_for(hires_steps(p), h.strength)
    return p.model_copy(update={
        "task": "img2img", "model": h.model or p.model, "width": t.width, "height": t.height,
        "steps": schedule, "strength": strength, "scheduler": h.scheduler or p.scheduler,
        "prompt": p.prompt if h.prompt is None else h.prompt,
        "negative_prompt": p.negative_prompt if h.negative_prompt is None else h.negative_prompt,
        "hires": None, "refiner": None, "inputs": ()})


def infotext_fields(summary: dict[str, Any],
                    label: Callable[[str], str | tuple[str, str | None]]) -> list[tuple[str, Any]]:
    """The infotext fields A1111 1.10 writes for hires fix and the refiner, from a job's
    ``GenerationParams.summary()`` (``label``: a scheduler's A1111 sampler name, or sampler
    and schedule type as 1.9+ writes them); raw values, as A1111's ``extra_generation_params``
    holds them (the infotext quotes them)."""
    out: list[tuple[str, Any]] = []
    h = summary.get("hires")
    if h:
        out.append(("Denoising strength", h["strength"]))
        if h["resize_x"] or h["resize_y"]:
            out.append(("Hires resize", f"{h['resize_x']}x{h['resize_y']}"))
        else:
            out.append(("Hires upscale", h["scale"]))
        if h["steps"]:
            out.append(("Hires steps", h["steps"]))
        out.append(("Hires upscaler", h["upscaler"]))
        if h["model"]:
            out.append(("Hires checkpoint", h["model"]))
        if h["scheduler"]:
            named = label(h["scheduler"])
            sampler, schedule = (named, None) if isinstance(named, str) else named
            out.append(("Hires sampler", sampler))
            if schedule is not None:
                out.append(("Hires schedule type", schedule))
        for key, name in (("prompt", "Hires prompt"), ("negative_prompt", "Hires negative prompt")):
            if h[key] is not None and h[key] != summary.get(key):
                out.append((name, h[key]))
    r = summary.get("refiner")
    if r:
        out += [("Refiner", r["model"]), ("Refiner switch at", r["switch_at"])]
    u = summary.get("sd_upscale")  # A1111's SD upscale script (engine.sd_upscale)
    if u:
        out += [("SD upscale overlap", u["overlap"]), ("SD upscale upscaler", u["upscaler"])]
    return out
