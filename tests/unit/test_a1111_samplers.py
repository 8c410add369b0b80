"""A1111's sampler labels: each names one engine scheduler, unambiguously, both ways."""

from __future__ import annotations

import pytest

from sdserve.api.dialects.a1111.samplers import (
    LABELS,
    SAMPLERS,
    SCHEDULE_TYPES,
    a1111_label,
    a1111_labels,
    lookup_a1111,
    resolve_a1111,
)
from sdserve.engine.schedulers import SCHEDULERS, scheduler_names
from sdserve.errors import BadInput


def test_labels_are_unique_and_name_registry_entries() -> None:
    labels = [label.lower() for e in SCHEDULERS for label in a1111_labels(e)]
    assert len(labels) == len(set(labels))
    assert set(LABELS) <= set(scheduler_names()), "a label for a scheduler the engine does not have"


def test_a1111_labels_map_both_ways() -> None:
    assert lookup_a1111("DPM++ 2M Karras").name == "dpmpp_2m_karras"
    assert lookup_a1111("euler a").name == "euler_a_linspace"  # case-insensitive, as A1111 clients vary
    assert lookup_a1111("dpmpp_2m").name == "dpmpp_2m"  # our own names are accepted too
    assert a1111_label("dpmpp_2m_karras") == "DPM++ 2M"  # A1111 1.10's DPM++ 2M runs Karras by default
    assert a1111_label("dpmpp_2m_linspace") == "DPM++ 2M Uniform"
    assert a1111_label("euler_trailing") == "Euler SGM Uniform"
    assert a1111_label("dpmpp_2m") == "dpmpp_2m"  # the model's own spacing: no A1111 name, ours
    with pytest.raises(BadInput) as e:
        lookup_a1111("Restart")
    assert e.value.field == "sampler_name" and "Euler a" in e.value.message


def test_every_label_reads_back_as_its_entry() -> None:
    # Infotext's "Sampler: ..." pasted back into a request runs the same scheduler.
    for name, (label,) in LABELS.items():
        assert lookup_a1111(label).name == name, label


# A1111 1.10's lists (modules/sd_samplers_*.py, modules/sd_schedulers.py): every one is
# either run or refused by name, never unknown.
A1111_SAMPLERS = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
                  "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
                  "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
A1111_SCHEDULE_TYPES = ["automatic", "uniform", "karras", "exponential", "polyexponential", "sgm_uniform",
                        "kl_optimal", "align_your_steps", "simple", "normal", "ddim", "beta"]
REFUSED_SAMPLERS = {"DPM++ 2S a", "DPM fast", "DPM adaptive", "Restart", "DDIM CFG++"}
REFUSED_TYPES = {"kl_optimal", "align_your_steps"}


def test_a1111_1_10_lists_are_covered() -> None:
    assert [s.label for s in SAMPLERS] == A1111_SAMPLERS
    assert [t.name for t in SCHEDULE_TYPES] == A1111_SCHEDULE_TYPES
    assert {s.label for s in SAMPLERS if s.engine is None} == REFUSED_SAMPLERS
    assert {t.name for t in SCHEDULE_TYPES if t.engine is None} - {"automatic"} == REFUSED_TYPES


@pytest.mark.parametrize("sampler", sorted(REFUSED_SAMPLERS))
def test_refused_samplers_say_why_and_name_the_alternatives(sampler: str) -> None:
    with pytest.raises(BadInput) as e:
        resolve_a1111(sampler, None)
    assert e.value.field == "sampler_name"
    assert "not available" in e.value.message and "DPM++ 2M, " in e.value.message and "Euler a" in e.value.message


@pytest.mark.parametrize("stype", sorted(REFUSED_TYPES))
def test_refused_schedule_types_say_why_and_name_the_alternatives(stype: str) -> None:
    with pytest.raises(BadInput) as e:
        resolve_a1111("Euler", stype)
    assert e.value.field == "scheduler"
    assert "not available" in e.value.message and "Karras" in e.value.message and "Normal" in e.value.message


@pytest.mark.parametrize(("sampler", "stype", "expected"), [
    # Automatic is A1111 1.10's default schedule for the sampler.
    ("Euler", "Automatic", "euler_linspace"),
    ("DPM++ 2M", "Automatic", "dpmpp_2m_karras"),
    ("DPM++ 2M SDE", None, "dpmpp_2m_sde_exponential"),
    ("DPM++ 3M SDE", None, "dpmpp_3m_sde_exponential"),
    ("DPM2 a", None, "dpm2_a_karras"),
    ("DDIM", None, "ddim"),  # timestep samplers: the model's own spacing
    # SillyTavern's default.
    ("Euler a", "normal", "euler_a_linspace"),
    ("DPM++ 2M", "Uniform", "dpmpp_2m_linspace"),
    ("DPM++ 2M", "simple", "dpmpp_2m_trailing"),
    ("Euler", "SGMUniform", "euler_trailing"),
    ("Euler", "DDIM", "euler_leading"),
    ("Heun", "polyexponential", "heun_exponential"),
    ("LMS", "beta", "lms_beta"),
    ("DPM++ 2M SDE Heun", "karras", "dpmpp_2m_sde_heun_karras"),
    ("UniPC", "Exponential", "unipc_exponential"),
    ("k_dpmpp_2m", "karras", "dpmpp_2m_karras"),  # A1111's aliases
    ("Euler a SGM Uniform", None, "euler_a_trailing"),  # a schedule label ending the name, as A1111 reads it
])
def test_sampler_and_schedule_type_pick_one_entry(sampler: str, stype: str | None, expected: str) -> None:
    assert resolve_a1111(sampler, stype).name == expected


@pytest.mark.parametrize(("sampler", "stype"), [("Euler a", "Karras"), ("DDIM", "Beta"), ("LCM", "Normal"),
                                                 ("DPM++ SDE", "Normal")])
def test_schedule_a_sampler_lacks_in_diffusers_lists_what_it_takes(sampler: str, stype: str) -> None:
    with pytest.raises(BadInput) as e:
        resolve_a1111(sampler, stype)
    assert e.value.field == "scheduler" and "takes: Automatic" in e.value.message


def test_contradicting_schedules_are_refused() -> None:
    with pytest.raises(BadInput) as e:
        resolve_a1111("DPM++ 2M Karras", "Exponential")
    assert e.value.field == "scheduler"
    with pytest.raises(BadInput) as e:
        resolve_a1111("dpmpp_2m", "Karras")  # our own names already fix the schedule
    assert e.value.field == "scheduler"


def test_infotext_sampler_and_schedule_type_read_back_as_the_entry() -> None:
    # A1111 1.9+ writes "Sampler: DPM++ 2M, Schedule type: Karras"; pasted back, they run the same.
    from sdserve.api.dialects.a1111.samplers import infotext_sampler, resolve_a1111

    assert infotext_sampler("dpmpp_2m_karras") == ("DPM++ 2M", "Karras")
    assert infotext_sampler("dpmpp_2m_linspace") == ("DPM++ 2M", "Uniform")
    for name in LABELS:
        sampler, schedule = infotext_sampler(name)
        assert resolve_a1111(sampler, schedule, "sampler_name").name == name, (name, sampler, schedule)
