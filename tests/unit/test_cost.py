"""Job cost: UNet evaluations as the diffusers schedulers really make them, x latent pixels x
the family's weight; and the per-request limits checked against it."""

from __future__ import annotations

import pytest

from sdserve.engine.cost import job_cost, unet_evaluations, unet_passes
from sdserve.engine.params import GenerationParams
from sdserve.engine.schedulers import SCHEDULERS
from sdserve.errors import BadInput
from sdserve.service.limits import RequestLimits, check_limits


@pytest.mark.parametrize("entry", SCHEDULERS, ids=lambda e: e.name)
def test_unet_passes_match_the_diffusers_schedulers(entry):
    import diffusers

    scheduler = getattr(diffusers, entry.cls)(**entry.overrides)
    order = 2 if entry.cls in ("HeunDiscreteScheduler", "KDPM2DiscreteScheduler",
                               "KDPM2AncestralDiscreteScheduler") else 1
    for steps in (1, 2, 5, 20, 37):
        scheduler.set_timesteps(steps)
        assert unet_passes(entry.name, steps) == len(scheduler.timesteps), steps
        # img2img runs the last int(steps * strength) steps: diffusers' get_timesteps slices
        # timesteps[t_start * order:] with t_start = steps - run.
        for strength in (0.3, 0.75):
            run = min(steps, int(steps * strength))
            if run:
                assert unet_passes(entry.name, steps, run) == len(scheduler.timesteps[(steps - run) * order:])


def _p(**kw):  # type: ignore[no-untyped-def]
    base = dict(model="m", prompt="x", width=512, height=512, steps=20, guidance=7.5, strength=1.0,
                scheduler="dpmpp_2m", seed=1)
    return GenerationParams(**{**base, **kw})


def test_cost_is_evaluations_times_latent_pixels_times_family():
    assert job_cost(_p(), "sd15") == 40  # 20 steps x 2 CFG rows at 512x512: the unit's definition
    assert job_cost(_p(guidance=1.0), "sd15") == 20  # no CFG: one row
    assert job_cost(_p(width=256, height=256), "sd15") == 10
    assert job_cost(_p(n=3), "sd15") == 120
    assert job_cost(_p(scheduler="heun"), "sd15") == 2 * 39
    assert job_cost(_p(), "sdxl") == pytest.approx(40 * 2.1)
    # img2img at strength 0.5 runs int(20 * 0.5) = 10 steps.
    img2img = _p(task="img2img", strength=0.5)
    assert unet_evaluations(img2img) == 20 and job_cost(img2img, "sd15") == 20
    # SDXL-Lightning: 4 steps, CFG off, 1024x1024.
    assert job_cost(_p(width=1024, height=1024, steps=4, guidance=0.0, scheduler="euler_trailing"),
                    "sdxl") == pytest.approx(4 * 4 * 2.1)  # 4 evaluations on 4x the latent pixels


def test_limits_name_the_field_and_the_limit():
    limits = RequestLimits(max_steps=50, max_side=1024, max_pixels=768 * 768, max_images=4, max_cost=100)
    check_limits(_p(), 40, limits)
    cases = [
        (_p(steps=51), 1, "steps", "limit of 50 steps"),
        (_p(width=1032, height=512), 1, "width", "limit of 1024 pixels per side"),
        (_p(width=512, height=1032), 1, "height", "limit of 1024"),
        (_p(width=1024, height=1024), 1, "width", "limit of 589824 pixels"),
        (_p(n=5), 1, "n", "limit of 4 images"),
        (_p(n=2), 3, "n", "2 x 3 batches = 6 images"),
        (_p(), 3, "cost", "costs 120 compute units"),
    ]
    for p, jobs, field, text in cases:
        with pytest.raises(BadInput) as e:
            check_limits(p, 40, limits, jobs)
        assert e.value.field == field and text in e.value.message, e.value.message


def test_a_keys_limits_only_narrow_the_servers():
    server = RequestLimits(max_steps=200, max_side=4096, max_cost=None)
    key = RequestLimits(max_steps=30, max_side=None, max_cost=500)
    both = server.tighter(key)
    assert both == RequestLimits(max_steps=30, max_side=4096, max_cost=500)
    assert server.tighter(RequestLimits(max_steps=500)).max_steps == 200
    assert RequestLimits.from_json(key.to_json()) == key and RequestLimits().to_json() is None
    with pytest.raises(ValueError):
        RequestLimits(max_images=0)


def test_the_documented_public_profile_and_worked_examples_hold():
    import re
    import tomllib
    from pathlib import Path

    from sdserve.config import Settings

    doc = (Path(__file__).resolve().parents[2] / "docs" / "jobs.md").read_text()
    profile = tomllib.loads(re.search(r"```toml\n# sdserve.toml\n(.*?)```", doc, re.S).group(1))
    s = Settings.model_validate(profile)
    sdxl = _p(width=1024, height=1024)  # SDXL's defaults: 20 steps, guidance 7.5
    assert 4 * job_cost(sdxl, "sdxl") <= s.request_max_cost < 5 * job_cost(sdxl, "sdxl")
    assert 35 * job_cost(_p(), "sd15") <= s.request_max_cost < 36 * job_cost(_p(), "sd15")
    assert 1024 * 1024 <= s.request_max_pixels and 1024 <= s.request_max_side
    # The fairness example: L's SDXL jobs cost 504, S's SD 1.5 jobs 40.
    large = job_cost(_p(width=1024, height=1024, steps=30, guidance=7.0), "sdxl")
    assert large == pytest.approx(504) and "(504 units each)" in doc
    assert -(-large // 40) == 13 and "13 jobs, 520" in doc
