"""The scheduler registry: every sampler name sdserve accepts, mapped to a diffusers
scheduler class and config overrides, with the source of each algorithm.

Torch-free on purpose: dialects read the names to validate requests (each dialect keeps its
own vocabulary for them, e.g. A1111's labels in ``api/dialects/a1111/samplers.py``); only
``pipelines.make_scheduler`` instantiates the classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInput

__all__ = ["SchedulerEntry", "SCHEDULERS", "get_scheduler", "scheduler_names"]


@dataclass(frozen=True)
class SchedulerEntry:
    """One sampler: our name, the diffusers class, overrides, and the paper."""

    name: str
    cls: str
    overrides: dict[str, Any] = field(default_factory=dict)
    source: str = ""


SCHEDULERS: tuple[SchedulerEntry, ...] = (
    SchedulerEntry("euler", "EulerDiscreteScheduler", {},
                   "Karras et al. 2022, Elucidating the Design Space (arXiv:2206.00364), Algorithm 2 without churn"),
    SchedulerEntry("euler_karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True},
                   "Euler on Karras sigmas (Karras et al. 2022, eq. 5), A1111's Euler + Karras schedule"),
    SchedulerEntry("euler_a", "EulerAncestralDiscreteScheduler", {},
                   "k-diffusion sample_euler_ancestral (Crowson)"),
    SchedulerEntry("euler_trailing", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"},
                   "Euler on trailing timesteps (Lin et al. 2023, arXiv:2305.08891), as SDXL-Lightning requires"),
    SchedulerEntry("heun", "HeunDiscreteScheduler", {}, "Karras et al. 2022, Algorithm 1 (2nd order)"),
    SchedulerEntry("heun_karras", "HeunDiscreteScheduler", {"use_karras_sigmas": True},
                   "Karras et al. 2022, Algorithm 1 on Karras sigmas"),
    SchedulerEntry("lms", "LMSDiscreteScheduler", {}, "k-diffusion sample_lms (linear multistep)"),
    SchedulerEntry("lms_karras", "LMSDiscreteScheduler", {"use_karras_sigmas": True},
                   "linear multistep on Karras sigmas"),
    SchedulerEntry("ddim", "DDIMScheduler", {}, "Song et al. 2020, DDIM (arXiv:2010.02502)"),
    SchedulerEntry("pndm", "PNDMScheduler", {"skip_prk_steps": True},
                   "Liu et al. 2022, Pseudo Numerical Methods (arXiv:2202.09778)"),
    SchedulerEntry("dpmpp_2m", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                   "Lu et al. 2022, DPM-Solver++ (arXiv:2211.01095), 2nd-order multistep"),
    SchedulerEntry("dpmpp_2m_karras", "DPMSolverMultistepScheduler",
                   {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
                   "DPM-Solver++ 2M on Karras sigmas"),
    SchedulerEntry("dpmpp_2m_sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
                   "DPM-Solver++ 2M, stochastic variant"),
    SchedulerEntry("dpmpp_2m_sde_karras", "DPMSolverMultistepScheduler",
                   {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
                   "DPM-Solver++ 2M SDE on Karras sigmas"),
    SchedulerEntry("dpmpp_sde", "DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++"},
                   "DPM-Solver++ single-step (deterministic stand-in for A1111's DPM++ SDE)"),
    SchedulerEntry("dpmpp_sde_karras", "DPMSolverSinglestepScheduler",
                   {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
                   "DPM-Solver++ single-step on Karras sigmas"),
    SchedulerEntry("dpm2", "KDPM2DiscreteScheduler", {}, "k-diffusion sample_dpm_2"),
    SchedulerEntry("dpm2_karras", "KDPM2DiscreteScheduler", {"use_karras_sigmas": True},
                   "k-diffusion sample_dpm_2 on Karras sigmas"),
    SchedulerEntry("dpm2_a", "KDPM2AncestralDiscreteScheduler", {}, "k-diffusion sample_dpm_2_ancestral"),
    SchedulerEntry("dpm2_a_karras", "KDPM2AncestralDiscreteScheduler", {"use_karras_sigmas": True},
                   "k-diffusion sample_dpm_2_ancestral on Karras sigmas"),
    SchedulerEntry("unipc", "UniPCMultistepScheduler", {}, "Zhao et al. 2023, UniPC (arXiv:2302.04867)"),
    SchedulerEntry("lcm", "LCMScheduler", {}, "Luo et al. 2023, Latent Consistency Models (arXiv:2310.04378)"),
)

_BY_NAME = {e.name: e for e in SCHEDULERS}


def scheduler_names() -> list[str]:
    return [e.name for e in SCHEDULERS]


def get_scheduler(name: str, field_name: str = "scheduler") -> SchedulerEntry:
    """The entry for one of our names, or BadInput listing the valid ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise BadInput(field_name, f"unknown scheduler {name!r}; valid: {', '.join(_BY_NAME)}") from None
