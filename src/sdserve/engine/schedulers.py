"""The scheduler registry: every sampler name sdserve accepts, mapped to a diffusers
scheduler class and config overrides, with the source of each algorithm.

Torch-free on purpose: dialects read the names (A1111's "DPM++ 2M Karras", ...) to validate
requests; only ``pipelines.make_scheduler`` instantiates the classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInput

__all__ = ["SchedulerEntry", "SCHEDULERS", "get_scheduler", "scheduler_names", "a1111_label", "lookup_a1111"]


@dataclass(frozen=True)
class SchedulerEntry:
    """One sampler: our name, the diffusers class, overrides, A1111 names, and the paper."""

    name: str
    cls: str
    overrides: dict[str, Any] = field(default_factory=dict)
    a1111: tuple[str, ...] = ()
    source: str = ""


SCHEDULERS: tuple[SchedulerEntry, ...] = (
    SchedulerEntry("euler", "EulerDiscreteScheduler", {}, ("Euler",),
                   "Karras et al. 2022, Elucidating the Design Space (arXiv:2206.00364), Algorithm 2 without churn"),
    SchedulerEntry("euler_karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}, ("Euler Karras",),
                   "Euler on Karras sigmas (Karras et al. 2022, eq. 5), A1111's Euler + Karras schedule"),
    SchedulerEntry("euler_a", "EulerAncestralDiscreteScheduler", {}, ("Euler a",),
                   "k-diffusion sample_euler_ancestral (Crowson)"),
    SchedulerEntry("euler_trailing", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}, (),
                   "Euler on trailing timesteps (Lin et al. 2023, arXiv:2305.08891), as SDXL-Lightning requires"),
    SchedulerEntry("heun", "HeunDiscreteScheduler", {}, ("Heun",), "Karras et al. 2022, Algorithm 1 (2nd order)"),
    SchedulerEntry("heun_karras", "HeunDiscreteScheduler", {"use_karras_sigmas": True}, ("Heun Karras",),
                   "Karras et al. 2022, Algorithm 1 on Karras sigmas"),
    SchedulerEntry("lms", "LMSDiscreteScheduler", {}, ("LMS",), "k-diffusion sample_lms (linear multistep)"),
    SchedulerEntry("lms_karras", "LMSDiscreteScheduler", {"use_karras_sigmas": True}, ("LMS Karras",),
                   "linear multistep on Karras sigmas"),
    SchedulerEntry("ddim", "DDIMScheduler", {}, ("DDIM",), "Song et al. 2020, DDIM (arXiv:2010.02502)"),
    SchedulerEntry("pndm", "PNDMScheduler", {"skip_prk_steps": True}, ("PLMS",),
                   "Liu et al. 2022, Pseudo Numerical Methods (arXiv:2202.09778)"),
    SchedulerEntry("dpmpp_2m", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                   ("DPM++ 2M",), "Lu et al. 2022, DPM-Solver++ (arXiv:2211.01095), 2nd-order multistep"),
    SchedulerEntry("dpmpp_2m_karras", "DPMSolverMultistepScheduler",
                   {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
                   ("DPM++ 2M Karras",), "DPM-Solver++ 2M on Karras sigmas"),
    SchedulerEntry("dpmpp_2m_sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
                   ("DPM++ 2M SDE",), "DPM-Solver++ 2M, stochastic variant"),
    SchedulerEntry("dpmpp_2m_sde_karras", "DPMSolverMultistepScheduler",
                   {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
                   ("DPM++ 2M SDE Karras",), "DPM-Solver++ 2M SDE on Karras sigmas"),
    SchedulerEntry("dpmpp_sde", "DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++"}, ("DPM++ SDE",),
                   "DPM-Solver++ single-step (deterministic stand-in for A1111's DPM++ SDE)"),
    SchedulerEntry("dpmpp_sde_karras", "DPMSolverSinglestepScheduler",
                   {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}, ("DPM++ SDE Karras",),
                   "DPM-Solver++ single-step on Karras sigmas"),
    SchedulerEntry("dpm2", "KDPM2DiscreteScheduler", {}, ("DPM2",), "k-diffusion sample_dpm_2"),
    SchedulerEntry("dpm2_karras", "KDPM2DiscreteScheduler", {"use_karras_sigmas": True}, ("DPM2 Karras",),
                   "k-diffusion sample_dpm_2 on Karras sigmas"),
    SchedulerEntry("dpm2_a", "KDPM2AncestralDiscreteScheduler", {}, ("DPM2 a",), "k-diffusion sample_dpm_2_ancestral"),
    SchedulerEntry("dpm2_a_karras", "KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True},
                   ("DPM2 a Karras",), "k-diffusion sample_dpm_2_ancestral on Karras sigmas"),
    SchedulerEntry("unipc", "UniPCMultistepScheduler", {}, ("UniPC",), "Zhao et al. 2023, UniPC (arXiv:2302.04867)"),
    SchedulerEntry("lcm", "LCMScheduler", {}, ("LCM",), "Luo et al. 2023, Latent Consistency Models (arXiv:2310.04378)"),
)

_BY_NAME = {e.name: e for e in SCHEDULERS}
_BY_A1111 = {label.lower(): e for e in SCHEDULERS for label in e.a1111}


def scheduler_names() -> list[str]:
    return [e.name for e in SCHEDULERS]


def get_scheduler(name: str, field_name: str = "scheduler") -> SchedulerEntry:
    """The entry for one of our names, or BadInput listing the valid ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise BadInput(field_name, f"unknown scheduler {name!r}; valid: {', '.join(_BY_NAME)}") from None


def lookup_a1111(label: str, field_name: str = "sampler_name") -> SchedulerEntry:
    """The entry for an A1111 sampler label (case-insensitive) or one of our own names."""
    entry = _BY_A1111.get(label.lower()) or _BY_NAME.get(label)
    if entry is None:
        valid = [lbl for e in SCHEDULERS for lbl in e.a1111]
        raise BadInput(field_name, f"unknown sampler {label!r}; valid: {', '.join(valid)}")
    return entry


def a1111_label(name: str) -> str:
    """How A1111 would name our scheduler in infotext (our own name where it has none)."""
    entry = _BY_NAME.get(name)
    return entry.a1111[0] if entry and entry.a1111 else name
