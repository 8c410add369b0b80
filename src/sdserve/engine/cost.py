"""What a job costs, known before it runs: UNet evaluations x latent pixels x the family's
weight. The UNet loop is nearly all of a generation's compute, and its work grows with both.

Torch-free on purpose: the job service prices every request at submit time (per-request
limits, compute credits, fairness between keys), and a Ray API replica imports no torch.

One cost unit is one SD 1.5 UNet evaluation of one 512x512 image. A default SD 1.5 image
(20 steps of DPM++ 2M with CFG) costs 40; the same at 256x256 costs 10.
"""

from __future__ import annotations

from .catalog import Arch
from .hires import hires_pass_params
from .params import GenerationParams
from .schedulers import get_scheduler

__all__ = ["FAMILY_WEIGHT", "CONTROLNET_WEIGHT", "unet_passes", "denoising_steps", "unet_evaluations", "job_cost",
           "upscale_cost"]

# Latent pixels of one 512x512 image (the VAE downsamples by 8): the unit's size.
_UNIT_LATENT_PIXELS = (512 // 8) ** 2

# UNet FLOPs per latent pixel per evaluation, relative to SD 1.5, at each family's native
# size: counted with torch's FLOP counter on the full-size UNets (engine.fullsize's configs,
# on the meta device): SD 1.5 at 512x512 0.803 TFLOP per evaluation of one image, SDXL at
# 1024x1024 6.76 TFLOP, i.e. 8.4x the FLOPs on 4x the latent pixels. (Attention grows
# faster than the pixel count, so far from native sizes this is an approximation.)
FAMILY_WEIGHT: dict[str, float] = {"sd15": 1.0, "sdxl": 2.1}
# One ControlNet unit's pass relative to the UNet pass it accompanies, counted the same way
# (SD 1.5 at 512x512: 0.567 TFLOP against the UNet's 1.607 for two CFG rows), over the share
# of the steps the unit acts in (guidance_start to guidance_end).
CONTROLNET_WEIGHT = 0.35

# Second-order schedulers (Heun, k-diffusion's DPM2): every step but the first evaluates the
# UNet twice, so ``set_timesteps(n)`` makes 2n - 1 timesteps.
_SECOND_ORDER = frozenset({"HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
                                       "KDPM2AncestralDiscreteScheduler"})


def unet_passes(scheduler: str, steps: int, run: int | None = None) -> int:
    """UNet evaluations of one image (one CFG row) when ``run`` of a ``steps``-step schedule
    of our scheduler ``scheduler`` are run (all by default; img2img runs the last ones).

    One evaluation per timestep the diffusers scheduler makes, which is not always one per
    step: second-order samplers make 2n - 1, PLMS n + 1. img2img drops the first
    ``(steps - run) x order`` timesteps, as diffusers' ``get_timesteps`` does. A test holds
    this to diffusers' own ``set_timesteps`` for every registered scheduler.
    """
    run = steps if run is None else run
    if run <= 0:
        return 0
    cls = get_scheduler(scheduler).cls
    if cls in _SECOND_ORDER:
        return (2 * steps - 1) - 2 * (steps - run)
    if cls == "PNDMScheduler" and steps > 1:
        return (steps + 1) - (steps - run)  # PLMS repeats a timestep to start its multistep history
    return run


def denoising_steps(p: GenerationParams) -> int:
    """Steps a resolved request runs: img2img and inpainting run ``int(steps * strength)`` of
    the schedule (the expression diffusers uses), text to image all of them."""
    steps = p.steps or 0
    if p.task == "txt2img":
        return steps
    return min(steps, int(steps * (p.strength if p.strength is not None else 1.0)))


def unet_evaluations(p: GenerationParams) -> int:
    """UNet evaluations of the whole request: passes x CFG rows (classifier-free guidance
    evaluates a conditional and an unconditional row when guidance > 1, as diffusers
    decides) x images."""
    cfg_rows = 2 if (p.guidance or 0.0) > 1 else 1
    return unet_passes(p.scheduler or "", p.steps or 0, denoising_steps(p)) * cfg_rows * p.n


# A model upscaler's compute per output pixel, in cost units per 512x512 of output: RRDBNet
# x4 (ESRGAN, Real-ESRGAN x4plus) counts ~36 MFLOP per input pixel, 0.59 TFLOP for a 512x512
# result (128x128 in), 0.73 of the 0.803 TFLOP unit. Built-in resamplers cost nothing.
_UPSCALE_UNITS_PER_UNIT_IMAGE = 0.75
_BUILTIN_UPSCALERS = frozenset({"None", "Lanczos", "Nearest"})


def upscale_cost(p: GenerationParams) -> float:
    """The upscale's share of a job's cost (0 without one, or with a built-in resampler)."""
    s = p.upscale
    if s is None or s.upscaler.capitalize() in _BUILTIN_UPSCALERS:
        return 0.0
    if p.task == "upscale":
        out_pixels = (p.width or 0) * (p.height or 0)
    else:
        by = s.scale or max((s.width or 0) / (p.width or 1), (s.height or 0) / (p.height or 1))
        out_pixels = int((p.width or 0) * (p.height or 0) * by * by) * p.n
    return out_pixels / (512 * 512) * _UPSCALE_UNITS_PER_UNIT_IMAGE


def job_cost(p: GenerationParams, arch: Arch | str) -> float:
    """The cost of a resolved request (``prepare``'s output) in cost units."""
    if p.task == "upscale":
        return round(upscale_cost(p), 6)
    latent_pixels = ((p.width or 0) // 8) * ((p.height or 0) // 8)
    control = sum(CONTROLNET_WEIGHT * (u.guidance_end - u.guidance_start) for u in p.control)
    units = unet_evaluations(p) * latent_pixels / _UNIT_LATENT_PIXELS * FAMILY_WEIGHT.get(arch, 1.0) * (1 + control)
    if p.hires is not None:  # the second pass is a request of its own at the target size
        units += job_cost(hires_pass_params(p), arch)
    return round(units + upscale_cost(p), 6)
