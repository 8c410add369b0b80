"""The passes of a request: one denoising run each, chained by ``batching.run_batch``.

Most requests are one pass. Hires fix adds an img2img pass at the target size over the
first pass's latents (interpolated: A1111's latent modes) or its decoded images (through an
image upscaler); the SDXL refiner splits the schedule between the base model and the
refiner (diffusers' ``denoising_end`` / ``denoising_start``). A pass is described by the
params of its run, the model it runs on, and how it takes the previous pass's output; the
recipe in ``batching`` runs each one like any request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from PIL import Image

from .hires import HiresFix, HiresTarget, hires_pass_params, hires_steps
from .params import GenerationParams
from .prompt_schedule import Timeline

__all__ = ["Pass", "Resize", "plan_passes", "decode_latents"]

Takes = Literal["nothing", "latent", "pil"]
# Per row: what the previous pass made, turned into this pass's start (latents or images).
Start = Callable[[list[Any]], list[Any]]
# An image upscaler applied: (name, image, width, height) -> the image at that size.
Resize = Callable[[str, Image.Image, int, int], Image.Image]


@dataclass(frozen=True)
class Pass:
    """One denoising run of a request's chain."""

    params: Callable[[GenerationParams], GenerationParams]  # this run's params, from the request's
    steps: int  # denoising steps it runs (progress counts every pass)
    takes: Takes = "nothing"  # what it needs of the previous pass's output
    start: Start = lambda rows: rows  # noqa: E731 - the previous output, made into this pass's start
    extra: dict[str, Any] = field(default_factory=dict)  # pipeline arguments of this pass only
    # The steps a scheduled prompt spans in this pass (None: the pass's own, from step 0).
    timeline: Timeline | None = None


def _latent_upscale(h: HiresFix, t: HiresTarget) -> Start:
    mode, antialias = h.latent_mode or ("bilinear", False)

    def start(rows: list[Any]) -> list[Any]:
        out = []
        for lat in rows:
            up = torch.nn.functional.interpolate(lat, size=(t.upscale_height // 8, t.upscale_width // 8), mode=mode,
                                                 antialias=antialias)
            # A1111 crops the latents to the box, half the excess before and half after.
            y0, x0 = t.crop_y // 2, t.crop_x // 2
            out.append(up[:, :, y0:y0 + t.height // 8, x0:x0 + t.width // 8])
        return out

    return start


def _image_upscale(h: HiresFix, t: HiresTarget, resize: Resize) -> Start:
    def start(rows: list[Any]) -> list[Any]:
        x0, y0 = t.crop_x // 2 * 8, t.crop_y // 2 * 8
        return [resize(h.upscaler, img, t.upscale_width, t.upscale_height).crop((x0, y0, x0 + t.width, y0 + t.height))
                for img in rows]

    return start


def plan_passes(p: GenerationParams, resize: Resize | None = None) -> list[Pass]:
    """The passes ``p`` runs (``resize``: how an image upscaler is applied; the engine's)."""
    assert p.steps is not None and p.width and p.height
    if p.refiner is not None:
        switch = p.refiner.switch_at
        base_steps = max(1, round(p.steps * switch))
        refiner = p.refiner.model

        def refine(q: GenerationParams) -> GenerationParams:
            return q.model_copy(update={"task": "img2img", "model": refiner, "refiner": None, "inputs": ()})

        return [Pass(params=lambda q: q, steps=base_steps, extra={"denoising_end": switch}),
                Pass(params=refine, steps=p.steps - base_steps, takes="latent", extra={"denoising_start": switch},
                     timeline=Timeline(p.steps, continues=True))]
    first = Pass(params=lambda q: q, steps=p.steps)
    if p.hires is None:
        return [first]
    h = p.hires
    t = h.target(p.width, p.height)
    # A1111's hires timeline: a scheduled prompt's `when` goes on from the first pass's steps.
    timeline = Timeline(hires_steps(p), first_pass_steps=p.steps)
    if h.latent_mode is not None:
        second = Pass(params=hires_pass_params, steps=hires_steps(p), takes="latent", start=_latent_upscale(h, t),
                      timeline=timeline)
    else:
        if resize is None:
            raise ValueError(f"hires upscaler {h.upscaler!r} needs the engine's image upscalers")
        second = Pass(params=hires_pass_params, steps=hires_steps(p), takes="pil", start=_image_upscale(h, t, resize),
                      timeline=timeline)
    return [first, second]


def decode_latents(pipe: Any, rows: list[Any]) -> list[Image.Image]:
    """Latents (one tensor per row) decoded to images by ``pipe``'s VAE, one at a time (as the
    pipelines do with slicing on): what a chain stopped before its last pass returns."""
    vae = pipe.vae
    out = []
    with torch.inference_mode():
        for lat in rows:
            image = vae.decode(lat.to(vae.device, vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
            out.extend(pipe.image_processor.postprocess(image, output_type="pil"))
    return out
