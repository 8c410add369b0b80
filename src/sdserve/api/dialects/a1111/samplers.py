"""A1111 1.10's samplers and schedule types, mapped onto the engine's schedulers.

A1111 names a sampler ("DPM++ 2M") and, since 1.9, a schedule type ("Karras") separately;
the engine names each combination (``dpmpp_2m_karras``, ``engine/schedulers.py``). A
schedule type is a diffusers config option where one matches; what has no faithful
implementation here is refused, naming what is available. docs/a1111.md has the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdserve.engine.schedulers import SCHEDULERS, SchedulerEntry, get_scheduler, with_schedule
from sdserve.errors import BadInput

__all__ = ["A1111Sampler", "ScheduleType", "SAMPLERS", "SCHEDULE_TYPES", "LABELS", "resolve_a1111",
           "lookup_a1111", "a1111_label", "a1111_labels"]


@dataclass(frozen=True)
class A1111Sampler:
    """One of A1111's samplers: the engine's sampler for it (None: refused, ``missing`` says
    why) and the schedule A1111 1.10 gives it for "Automatic"."""

    label: str
    aliases: tuple[str, ...]
    engine: str | None
    default: str | None = None  # A1111's options["scheduler"]; k-diffusion's own is Uniform
    own_spacing: bool = False  # A1111's timestep samplers: Automatic is the model's own spacing
    missing: str = ""

    @property
    def automatic(self) -> str | None:
        """The A1111 schedule type "Automatic" means for this sampler (None: the model's own)."""
        return None if self.own_spacing else (self.default or "uniform")


@dataclass(frozen=True)
class ScheduleType:
    """One of A1111's schedule types and the engine schedule (a key of engine SCHEDULES)
    that computes it; None: refused, ``missing`` says why."""

    name: str
    label: str
    engine: str | None
    aliases: tuple[str, ...] = ()
    default_rho: float = -1
    need_inner_model: bool = False
    missing: str = ""


_NO_DIFFUSERS = "diffusers has no {what}; sdserve runs diffusers' schedulers only"

# A1111 1.10's list, in its order (modules/sd_samplers_kdiffusion.py, sd_samplers_timesteps.py,
# sd_samplers_lcm.py). "automatic" is each sampler's own default there.
SAMPLERS: tuple[A1111Sampler, ...] = (
    A1111Sampler("DPM++ 2M", ("k_dpmpp_2m",), "dpmpp_2m", "karras"),
    A1111Sampler("DPM++ SDE", ("k_dpmpp_sde",), "dpmpp_sde", "karras"),
    A1111Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "dpmpp_2m_sde", "exponential"),
    A1111Sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",), "dpmpp_2m_sde_heun", "exponential"),
    A1111Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), None, "karras", False,
                 _NO_DIFFUSERS.format(what="ancestral single-step DPM-Solver++ (its single-step solver is deterministic)")),
    A1111Sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "dpmpp_3m_sde", "exponential"),
    A1111Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), "euler_a"),
    A1111Sampler("Euler", ("k_euler",), "euler"),
    A1111Sampler("LMS", ("k_lms",), "lms"),
    A1111Sampler("Heun", ("k_heun",), "heun"),
    A1111Sampler("DPM2", ("k_dpm_2",), "dpm2", "karras"),
    A1111Sampler("DPM2 a", ("k_dpm_2_a",), "dpm2_a", "karras"),
    A1111Sampler("DPM fast", ("k_dpm_fast",), None, None, False,
                 _NO_DIFFUSERS.format(what="k-diffusion's DPM-Solver-fast (adaptive order, ancestral noise)")),
    A1111Sampler("DPM adaptive", ("k_dpm_ad",), None, None, False,
                 _NO_DIFFUSERS.format(what="adaptive-step DPM-Solver (it picks its own step count)")),
    A1111Sampler("Restart", ("restart",), None, "karras", False,
                 _NO_DIFFUSERS.format(what="Restart sampler (Xu et al. 2023)")),
    A1111Sampler("DDIM", ("ddim",), "ddim", own_spacing=True),
    A1111Sampler("DDIM CFG++", ("ddim_cfgpp",), None, None, True,
                 _NO_DIFFUSERS.format(what="CFG++ (it renoises with the unconditional prediction)")),
    A1111Sampler("PLMS", ("plms",), "pndm", own_spacing=True),
    A1111Sampler("UniPC", ("unipc",), "unipc", own_spacing=True),
    A1111Sampler("LCM", ("k_lcm",), "lcm", own_spacing=True),
)

# A1111 1.10's modules/sd_schedulers.py. Uniform and Normal are the same timesteps there
# (evenly from the last to 0), as are Simple and SGM Uniform (evenly down from the last);
# Polyexponential at its default rho 1 is Exponential.
SCHEDULE_TYPES: tuple[ScheduleType, ...] = (
    ScheduleType("automatic", "Automatic", None),
    ScheduleType("uniform", "Uniform", "linspace", need_inner_model=True),
    ScheduleType("karras", "Karras", "karras", default_rho=7.0),
    ScheduleType("exponential", "Exponential", "exponential"),
    ScheduleType("polyexponential", "Polyexponential", "exponential", default_rho=1.0),
    ScheduleType("sgm_uniform", "SGM Uniform", "trailing", ("SGMUniform",), need_inner_model=True),
    ScheduleType("kl_optimal", "KL Optimal", None,
                 missing=_NO_DIFFUSERS.format(what="KL-optimal sigma schedule option")),
    ScheduleType("align_your_steps", "Align Your Steps", None,
                 missing=_NO_DIFFUSERS.format(what="Align Your Steps option for arbitrary step counts")),
    ScheduleType("simple", "Simple", "trailing", need_inner_model=True),
    ScheduleType("normal", "Normal", "linspace", need_inner_model=True),
    ScheduleType("ddim", "DDIM", "leading", need_inner_model=True),
    ScheduleType("beta", "Beta", "beta", need_inner_model=True),
)
_AUTOMATIC = SCHEDULE_TYPES[0]
# How an engine schedule is written back as A1111's (the first type that maps to it).
_TYPE_OF_SCHEDULE = {t.engine: t for t in reversed(SCHEDULE_TYPES) if t.engine}
_TYPE_OF_SCHEDULE.update({"linspace": SCHEDULE_TYPES[1], "trailing": SCHEDULE_TYPES[5]})
_SAMPLER_BY_ENGINE = {s.engine: s for s in SAMPLERS if s.engine}


def _names(*names: str) -> list[str]:
    return [n.lower() for n in names]


_SAMPLER_BY_NAME = {n: s for s in SAMPLERS for n in _names(s.label, *s.aliases)}
_TYPE_BY_NAME = {n: t for t in SCHEDULE_TYPES for n in _names(t.name, t.label, *t.aliases)}


def _split_suffix(name: str) -> tuple[str, ScheduleType | None]:
    """A1111's legacy combined names: "DPM++ 2M Karras" is DPM++ 2M on Karras (any
    schedule label or alias may end a sampler name, as A1111's get_sampler_and_scheduler reads)."""
    low = name.lower()
    for t in SCHEDULE_TYPES[1:]:
        for option in _names(t.label, *t.aliases):
            if low.endswith(" " + option) and low[: -len(option) - 1] in _SAMPLER_BY_NAME:
                return name[: -len(option) - 1], t
    return name, None


def _valid_samplers() -> str:
    return ", ".join(s.label for s in SAMPLERS if s.engine)


def _schedule_type(scheduler: str | None) -> ScheduleType:
    kind = (scheduler or "automatic").strip().lower()
    if kind not in _TYPE_BY_NAME:
        raise BadInput("scheduler", f"unknown schedule type {scheduler!r}; valid: "
                                    f"{', '.join(t.label for t in SCHEDULE_TYPES if t.engine or t is _AUTOMATIC)}")
    return _TYPE_BY_NAME[kind]


def resolve_a1111(sampler: str, scheduler: str | None, field_name: str = "sampler_name") -> SchedulerEntry:
    """The engine entry for A1111's sampler (label or alias, case-insensitive; one of the
    engine's own names is taken as is) on A1111's schedule type; BadInput naming the field
    at fault and what is available."""
    name = sampler.strip()
    stype = _schedule_type(scheduler)
    engine_own = _engine_name(name)
    if engine_own is not None:
        if stype is not _AUTOMATIC:
            raise BadInput("scheduler", f"{name!r} is sdserve's own scheduler name and already fixes its schedule; "
                                        f"send an A1111 sampler name ({_valid_samplers()}) to pick a schedule type")
        return engine_own
    base, suffix_type = _split_suffix(name)
    found = _SAMPLER_BY_NAME.get(base.lower())
    if found is None:
        raise BadInput(field_name, f"unknown sampler {sampler!r}; valid: {_valid_samplers()}")
    if found.engine is None:
        raise BadInput(field_name, f"sampler {found.label!r} is not available: {found.missing}; "
                                   f"available: {_valid_samplers()}")
    if suffix_type is not None:
        if stype is not _AUTOMATIC and stype is not suffix_type:
            raise BadInput("scheduler", f"sampler {name!r} names schedule type {suffix_type.label!r}, "
                                        f"which contradicts {scheduler!r}")
        stype = suffix_type
    return _combine(found, stype)


def _engine_name(name: str) -> SchedulerEntry | None:
    try:
        return get_scheduler(name)
    except BadInput:
        return None


def _combine(sampler: A1111Sampler, stype: ScheduleType) -> SchedulerEntry:
    assert sampler.engine is not None
    if stype is _AUTOMATIC and sampler.automatic is not None:
        stype = _TYPE_BY_NAME[sampler.automatic]
    schedule = stype.engine
    if stype is not _AUTOMATIC and schedule is None:
        raise BadInput("scheduler", f"schedule type {stype.label!r} is not available: {stype.missing}; "
                                    f"{sampler.label} takes: {', '.join(_types_for(sampler))}")
    if schedule is None:
        return get_scheduler(sampler.engine)
    entry = with_schedule(sampler.engine, schedule)
    if entry is None:
        raise BadInput("scheduler", f"sampler {sampler.label!r} has no {stype.label!r} schedule in diffusers; "
                                    f"it takes: {', '.join(_types_for(sampler))}")
    return entry


def _types_for(sampler: A1111Sampler) -> list[str]:
    """The schedule types ``sampler`` takes here, by label."""
    assert sampler.engine is not None
    return [t.label for t in SCHEDULE_TYPES
            if t is _AUTOMATIC or (t.engine and with_schedule(sampler.engine, t.engine) is not None)]


def lookup_a1111(label: str, field_name: str = "sampler_name") -> SchedulerEntry:
    """The entry for an A1111 sampler name (optionally with a schedule suffix) or one of our names."""
    return resolve_a1111(label, None, field_name)


def _label_of(entry: SchedulerEntry) -> str | None:
    """A1111's name for an engine entry: its sampler's label, and the schedule type's label
    unless it is what A1111 picks for Automatic (so the name reads back as the same entry)."""
    for base, sampler in _SAMPLER_BY_ENGINE.items():
        if entry.name == base:
            return sampler.label if sampler.automatic is None else None
        schedule = entry.name.removeprefix(base + "_") if entry.name.startswith(base + "_") else None
        if schedule in _TYPE_OF_SCHEDULE and with_schedule(base, schedule) is entry:
            if sampler.automatic and schedule == _TYPE_BY_NAME[sampler.automatic].engine:
                return sampler.label
            return f"{sampler.label} {_TYPE_OF_SCHEDULE[schedule].label}"
    return None


# Engine scheduler name -> A1111's name for it. An entry A1111 has no name for is left out
# (a k-diffusion sampler on the model's own spacing, e.g. euler) and goes by the engine's name.
LABELS: dict[str, tuple[str, ...]] = {e.name: (label,) for e in SCHEDULERS if (label := _label_of(e))}


def a1111_labels(entry: SchedulerEntry) -> tuple[str, ...]:
    """A1111's labels for ``entry`` (none where A1111 has no such sampler)."""
    return LABELS.get(entry.name, ())


def a1111_label(name: str) -> str:
    """How A1111 would name our scheduler in infotext (our own name where it has none)."""
    labels = LABELS.get(name)
    return labels[0] if labels else name


def infotext_sampler(name: str) -> tuple[str, str | None]:
    """A1111 1.9+ infotext's ``Sampler`` and ``Schedule type`` for an engine scheduler
    ("DPM++ 2M", "Karras"): the label split where it names a schedule type; a sampler's
    Automatic schedule by the type it resolves to; None where A1111 has no name for it."""
    label = a1111_label(name)
    for s in SAMPLERS:
        if label == s.label:
            auto = s.automatic
            return label, _TYPE_BY_NAME[auto].label if auto and auto in _TYPE_BY_NAME else None
        rest = label[len(s.label) + 1:] if label.startswith(s.label + " ") else None
        if rest is not None and any(t.label == rest for t in SCHEDULE_TYPES):
            return s.label, rest
    return label, None
