"""The scheduler registry: every entry builds a working diffusers scheduler on a model's own
config, and its names are unique (A1111's labels for them: test_a1111_samplers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdserve.engine.catalog import Catalog
from sdserve.engine.schedulers import CLASS_SCHEDULES, SCHEDULERS, SCHEDULES, get_scheduler, scheduler_names
from sdserve.errors import BadInput


@pytest.fixture(scope="module")
def sd15_scheduler_config(tiny_dir: Path) -> dict:
    # The tiny sd15 ships a PNDM config, as the real SD 1.5 repo does.
    return json.loads((tiny_dir / "sd15" / "base" / "scheduler" / "scheduler_config.json").read_text())


@pytest.mark.parametrize("entry", SCHEDULERS, ids=lambda e: e.name)
def test_every_entry_instantiates_on_the_model_config(entry, sd15_scheduler_config: dict) -> None:  # type: ignore[no-untyped-def]
    import diffusers

    from sdserve.engine.pipelines import make_scheduler

    sched = make_scheduler(entry.name, sd15_scheduler_config)
    assert type(sched) is getattr(diffusers, entry.cls)
    for key, value in entry.overrides.items():
        assert sched.config[key] == value, f"{entry.name}: override {key} not applied"
    # The model's noise schedule is kept; only the sampler changes.
    assert sched.config["beta_schedule"] == sd15_scheduler_config["beta_schedule"]
    assert sched.config["beta_end"] == sd15_scheduler_config["beta_end"]
    sched.set_timesteps(2)
    assert len(sched.timesteps) >= 2


def test_make_scheduler_returns_a_fresh_instance_each_time(sd15_scheduler_config: dict) -> None:
    from sdserve.engine.pipelines import make_scheduler

    # Schedulers keep per-run state (step index, model-output history): never share one.
    assert make_scheduler("dpmpp_2m", sd15_scheduler_config) is not make_scheduler("dpmpp_2m", sd15_scheduler_config)


def test_names_are_unique_and_cited() -> None:
    names = scheduler_names()
    assert len(names) == len(set(names))
    assert all(e.source for e in SCHEDULERS), "every algorithm cites its source"


def test_every_catalog_default_is_in_the_registry() -> None:
    for spec in Catalog.builtin():
        assert get_scheduler(spec.defaults.scheduler).name == spec.defaults.scheduler


def test_unknown_scheduler_is_bad_input_listing_the_valid_ones() -> None:
    with pytest.raises(BadInput) as e:
        get_scheduler("ddpm_fancy")
    assert e.value.field == "scheduler"
    assert "ddpm_fancy" in e.value.message and "dpmpp_2m" in e.value.message
    with pytest.raises(BadInput) as e:
        get_scheduler("nope", field_name="sampler")
    assert e.value.field == "sampler"



@pytest.mark.parametrize("cls", sorted(CLASS_SCHEDULES))
def test_every_schedule_variant_changes_the_schedule(cls: str, sd15_scheduler_config: dict) -> None:
    """diffusers' from_config drops options a class lacks with only a log line: each variant's
    options must be the class's own, and each must give its own sigmas or timesteps."""
    import inspect

    import diffusers

    from sdserve.engine.pipelines import make_scheduler

    params = inspect.signature(getattr(diffusers, cls).__init__).parameters
    config = {**sd15_scheduler_config, "timestep_spacing": "linspace"}  # so _linspace is the base's schedule
    by_base: dict[str, dict[str, str]] = {}
    for entry in (e for e in SCHEDULERS if e.cls == cls):
        assert set(entry.overrides) <= set(params), f"{entry.name}: {set(entry.overrides) - set(params)}"
        sched = make_scheduler(entry.name, config)
        sched.set_timesteps(7)
        sigmas = getattr(sched, "sigmas", None)
        key = repr((sched.timesteps.tolist(), None if sigmas is None else sigmas.tolist()))
        base, _, suffix = entry.name.rpartition("_")
        if suffix not in SCHEDULES:
            base = entry.name
        if suffix != "linspace":
            by_base.setdefault(base, {})[entry.name] = key
    for base, keys in by_base.items():
        assert len(set(keys.values())) == len(keys), f"{base}: some schedule options change nothing: {keys}"
