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

__all__ = ["SchedulerEntry", "SCHEDULERS", "SCHEDULES", "CLASS_SCHEDULES", "get_scheduler", "scheduler_names",
           "base_names", "with_schedule"]


@dataclass(frozen=True)
class SchedulerEntry:
    """One sampler: our name, the diffusers class, overrides, and the paper."""

    name: str
    cls: str
    overrides: dict[str, Any] = field(default_factory=dict)
    source: str = ""


# The samplers, each on the model's own noise schedule and timestep spacing.
_BASES: tuple[SchedulerEntry, ...] = (
    SchedulerEntry("euler", "EulerDiscreteScheduler", {},
                   "Karras et al. 2022, Elucidating the Design Space (arXiv:2206.00364), Algorithm 2 without churn"),
    SchedulerEntry("euler_a", "EulerAncestralDiscreteScheduler", {},
                   "k-diffusion sample_euler_ancestral (Crowson)"),
    SchedulerEntry("heun", "HeunDiscreteScheduler", {}, "Karras et al. 2022, Algorithm 1 (2nd order)"),
    SchedulerEntry("lms", "LMSDiscreteScheduler", {}, "k-diffusion sample_lms (linear multistep)"),
    SchedulerEntry("ddim", "DDIMScheduler", {}, "Song et al. 2020, DDIM (arXiv:2010.02502)"),
    SchedulerEntry("pndm", "PNDMScheduler", {"skip_prk_steps": True},
                   "Liu et al. 2022, Pseudo Numerical Methods (arXiv:2202.09778)"),
    SchedulerEntry("dpmpp_2m", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2},
                   "Lu et al. 2022, DPM-Solver++ (arXiv:2211.01095), 2nd-order multistep"),
    SchedulerEntry("dpmpp_2m_sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"},
                   "DPM-Solver++ 2M, stochastic variant (midpoint solver)"),
    SchedulerEntry("dpmpp_2m_sde_heun", "DPMSolverMultistepScheduler",
                   {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
                   "DPM-Solver++ 2M, stochastic variant with the Heun solver (k-diffusion solver_type='heun')"),
    SchedulerEntry("dpmpp_3m_sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
                   "DPM-Solver++ 3rd-order multistep, stochastic variant (k-diffusion sample_dpmpp_3m_sde)"),
    SchedulerEntry("dpmpp_sde", "DPMSolverSinglestepScheduler", {"algorithm_type": "sde-dpmsolver++"},
                   "DPM-Solver++ single-step, stochastic (k-diffusion sample_dpmpp_sde's method; Gaussian noise "
                   "per step where k-diffusion uses a Brownian tree)"),
    SchedulerEntry("dpm2", "KDPM2DiscreteScheduler", {}, "k-diffusion sample_dpm_2"),
    SchedulerEntry("dpm2_a", "KDPM2AncestralDiscreteScheduler", {}, "k-diffusion sample_dpm_2_ancestral"),
    SchedulerEntry("unipc", "UniPCMultistepScheduler", {}, "Zhao et al. 2023, UniPC (arXiv:2302.04867)"),
    SchedulerEntry("lcm", "LCMScheduler", {}, "Luo et al. 2023, Latent Consistency Models (arXiv:2310.04378)"),
)

# Sigma schedules and timestep spacings diffusers computes from a config option: the
# suffix of a variant's name, its overrides, and where the schedule comes from.
SCHEDULES: dict[str, tuple[dict[str, Any], str]] = {
    "karras": ({"use_karras_sigmas": True}, "Karras sigmas (Karras et al. 2022, eq. 5, rho 7)"),
    "exponential": ({"use_exponential_sigmas": True}, "exponential sigmas (log-linear from sigma_max to sigma_min)"),
    "beta": ({"use_beta_sigmas": True}, "beta sigmas (Lee et al. 2024, arXiv:2407.12173, alpha = beta = 0.6)"),
    "linspace": ({"timestep_spacing": "linspace"}, "timesteps evenly spaced from the last to the first"),
    "leading": ({"timestep_spacing": "leading"}, "timesteps at multiples of 1000 // steps, plus the config's offset"),
    "trailing": ({"timestep_spacing": "trailing"},
                 "timesteps evenly spaced down from the last (Lin et al. 2023, arXiv:2305.08891)"),
}

# Which schedules each diffusers class takes (its config has the option and set_timesteps
# reads it; LCM's spacing is fixed by its distillation, so it takes none).
_SPACINGS = ("linspace", "leading", "trailing")
_SIGMAS = ("karras", "exponential", "beta")
CLASS_SCHEDULES: dict[str, tuple[str, ...]] = {
    "EulerDiscreteScheduler": _SIGMAS + _SPACINGS,
    "EulerAncestralDiscreteScheduler": _SPACINGS,
    "HeunDiscreteScheduler": _SIGMAS + _SPACINGS,
    "LMSDiscreteScheduler": _SIGMAS + _SPACINGS,
    "KDPM2DiscreteScheduler": _SIGMAS + _SPACINGS,
    "KDPM2AncestralDiscreteScheduler": _SIGMAS + _SPACINGS,
    "DPMSolverMultistepScheduler": _SIGMAS + _SPACINGS,
    "DPMSolverSinglestepScheduler": _SIGMAS,
    "UniPCMultistepScheduler": _SIGMAS + _SPACINGS,
    "DDIMScheduler": _SPACINGS,
    "PNDMScheduler": _SPACINGS,
    "LCMScheduler": (),
}


def _variants(base: SchedulerEntry) -> tuple[SchedulerEntry, ...]:
    """``base`` and, for each schedule its class takes, ``<base>_<schedule>``."""
    return (base, *(SchedulerEntry(f"{base.name}_{s}", base.cls, {**base.overrides, **SCHEDULES[s][0]},
                                   f"{base.source}; {SCHEDULES[s][1]}")
                    for s in CLASS_SCHEDULES[base.cls]))


SCHEDULERS: tuple[SchedulerEntry, ...] = tuple(v for base in _BASES for v in _variants(base))

_BY_NAME = {e.name: e for e in SCHEDULERS}


def scheduler_names() -> list[str]:
    return [e.name for e in SCHEDULERS]


def base_names() -> list[str]:
    """The samplers on the model's own schedule (each variant is one of these + a suffix)."""
    return [e.name for e in _BASES]


def with_schedule(base: str, schedule: str) -> SchedulerEntry | None:
    """``base`` on ``schedule`` (a key of SCHEDULES), or None where its class has no such option."""
    return _BY_NAME.get(f"{base}_{schedule}") if schedule in CLASS_SCHEDULES[_BY_NAME[base].cls] else None


def get_scheduler(name: str, field_name: str = "scheduler") -> SchedulerEntry:
    """The entry for one of our names, or BadInput listing the valid ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise BadInput(field_name, f"unknown scheduler {name!r}; valid: {', '.join(base_names())}, each also "
                                   f"as <name>_<schedule> where its sampler takes one of {', '.join(SCHEDULES)} "
                                   f"(GET /v1/catalog, docs/a1111.md)") from None
