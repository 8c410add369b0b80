"""ComfyUI's sampler and scheduler names, mapped onto the engine's schedulers.

ComfyUI names a sampler (``sampler_name``: ``dpmpp_2m``) and a sigma schedule (``scheduler``:
``karras``) separately, as k-diffusion does (comfy/samplers.py: KSAMPLER_NAMES + ddim, uni_pc,
uni_pc_bh2; SCHEDULER_NAMES). The engine names each combination (``dpmpp_2m_karras``,
``engine/schedulers.py``). What diffusers has no faithful implementation of is refused, naming
why; docs/api-comfyui.md has the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdserve.engine.schedulers import SchedulerEntry, get_scheduler, with_schedule

__all__ = ["SAMPLERS", "SCHEDULERS", "SamplerRefused", "resolve_comfy", "sampler_choices", "scheduler_choices"]

_NO_DIFFUSERS = "diffusers has no {what}; sdserve runs diffusers' schedulers only"

# ComfyUI sampler name -> the engine's base sampler (None: refused, the string says why).
# The *_gpu variants differ from their base only in where the Brownian-tree noise is drawn;
# the engine draws its per-step noise from each image's own CPU generator, so both are the same.
SAMPLERS: dict[str, str | tuple[None, str]] = {
    "euler": "euler",
    "euler_ancestral": "euler_a",
    "heun": "heun",
    "dpm_2": "dpm2",
    "dpm_2_ancestral": "dpm2_a",
    "lms": "lms",
    "dpmpp_sde": "dpmpp_sde",
    "dpmpp_sde_gpu": "dpmpp_sde",
    "dpmpp_2m": "dpmpp_2m",
    "dpmpp_2m_sde": "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu": "dpmpp_2m_sde",
    "dpmpp_2m_sde_heun": "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu": "dpmpp_2m_sde_heun",
    "dpmpp_3m_sde": "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu": "dpmpp_3m_sde",
    "lcm": "lcm",
    # ComfyUI's "ddim" runs its Euler sampler (comfy/samplers.py sampler_object), which is
    # DDIM's update written on sigmas: the engine's Euler, on whichever schedule is named.
    "ddim": "euler",
    # ComfyUI's uni_pc is the B(h)=h variant (bh1); diffusers' UniPC is bh2.
    "uni_pc_bh2": "unipc",
    "uni_pc": (None, _NO_DIFFUSERS.format(what="UniPC bh1 variant configured; use uni_pc_bh2")),
    "euler_cfg_pp": (None, _NO_DIFFUSERS.format(what="CFG++ samplers")),
    "euler_ancestral_cfg_pp": (None, _NO_DIFFUSERS.format(what="CFG++ samplers")),
    "dpmpp_2m_cfg_pp": (None, _NO_DIFFUSERS.format(what="CFG++ samplers")),
    "dpmpp_2s_ancestral_cfg_pp": (None, _NO_DIFFUSERS.format(what="CFG++ samplers")),
    "heunpp2": (None, _NO_DIFFUSERS.format(what="Heun++ sampler")),
    "dpm_fast": (None, _NO_DIFFUSERS.format(what="DPM-Solver-fast (adaptive order, ancestral noise)")),
    "dpm_adaptive": (None, _NO_DIFFUSERS.format(what="adaptive-step DPM-Solver (it picks its own step count)")),
    "dpmpp_2s_ancestral": (None, _NO_DIFFUSERS.format(
        what="ancestral single-step DPM-Solver++ (its single-step solver is deterministic)")),
    "ddpm": (None, _NO_DIFFUSERS.format(what="k-diffusion-style DDPM sampler on sigmas")),
    "ipndm": (None, _NO_DIFFUSERS.format(what="iPNDM sampler")),
    "ipndm_v": (None, _NO_DIFFUSERS.format(what="iPNDM (variable step) sampler")),
    "deis": (None, _NO_DIFFUSERS.format(what="DEIS sampler configured for k-diffusion sigmas")),
}

# ComfyUI scheduler -> the engine schedule (a key of engine SCHEDULES); None: the model's own
# spacing is not what any ComfyUI scheduler means, so every name maps to an explicit option.
# normal: timesteps evenly from the last to the first (linspace); simple and sgm_uniform:
# evenly down from the last, the first left out (trailing; ComfyUI picks indices 1000/steps
# apart, the same timesteps where steps divides 1000); ddim_uniform: multiples of 1000 // steps
# plus one (leading, with SD's steps_offset 1).
SCHEDULERS: dict[str, str | tuple[None, str]] = {
    "normal": "linspace",
    "karras": "karras",
    "exponential": "exponential",
    "sgm_uniform": "trailing",
    "simple": "trailing",
    "ddim_uniform": "leading",
    "beta": "beta",
    "linear_quadratic": (None, _NO_DIFFUSERS.format(what="linear-quadratic schedule option")),
    "kl_optimal": (None, _NO_DIFFUSERS.format(what="KL-optimal sigma schedule option")),
}


# Pairs that run on the engine sampler's own timesteps: diffusers' LCMScheduler takes no
# schedule option; it steps evenly down its distillation schedule, which is what ComfyUI's
# recommended sgm_uniform / simple (evenly down from the last timestep) give an LCM model.
_OWN_SCHEDULE = {("lcm", "sgm_uniform"), ("lcm", "simple")}


@dataclass
class SamplerRefused(Exception):
    """A sampler/scheduler the engine cannot run: which input is at fault and why."""

    input_name: str
    kind: str  # "value_not_in_list" (a name sdserve does not list) or "custom_validation_failed" (a pair)
    message: str


def sampler_choices() -> list[str]:
    """The sampler names /object_info lists: those the engine runs, in ComfyUI's order."""
    return [name for name, engine in SAMPLERS.items() if isinstance(engine, str)]


def scheduler_choices() -> list[str]:
    return [name for name, engine in SCHEDULERS.items() if isinstance(engine, str)]


def _why(table: dict[str, str | tuple[None, str]], name: str, what: str, choices: list[str]) -> str:
    entry = table.get(name)
    if isinstance(entry, tuple):
        return f"{what} {name!r} is not available: {entry[1]}; available: {', '.join(choices)}"
    return f"unknown {what} {name!r}; available: {', '.join(choices)}"


def resolve_comfy(sampler_name: str, scheduler: str) -> SchedulerEntry:
    """The engine entry for ComfyUI's pair; SamplerRefused naming the input at fault."""
    base = SAMPLERS.get(sampler_name)
    if not isinstance(base, str):
        raise SamplerRefused("sampler_name", "value_not_in_list",
                             _why(SAMPLERS, sampler_name, "sampler", sampler_choices()))
    schedule = SCHEDULERS.get(scheduler)
    if not isinstance(schedule, str):
        raise SamplerRefused("scheduler", "value_not_in_list",
                             _why(SCHEDULERS, scheduler, "scheduler", scheduler_choices()))
    if (sampler_name, scheduler) in _OWN_SCHEDULE:
        return get_scheduler(base)
    entry = with_schedule(base, schedule)
    if entry is None:
        takes = [s for s, e in SCHEDULERS.items() if isinstance(e, str) and with_schedule(base, e) is not None]
        raise SamplerRefused("scheduler", "custom_validation_failed",
                             f"sampler {sampler_name!r} has no {scheduler!r} schedule in diffusers "
                             f"({get_scheduler(base).cls}); with {sampler_name} use: {', '.join(takes) or 'none'}")
    return entry
