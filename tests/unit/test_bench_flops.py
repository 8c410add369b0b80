"""The bench counts the UNet passes a sampler really makes, not one per step."""

from __future__ import annotations

import diffusers
import pytest

from sdserve.engine.benchmark import unet_passes


@pytest.mark.parametrize(("scheduler", "steps", "passes"), [
    (diffusers.PNDMScheduler(skip_prk_steps=True), 4, 5),  # PLMS repeats its first timestep
    (diffusers.EulerDiscreteScheduler(), 4, 4),
    (diffusers.HeunDiscreteScheduler(), 4, 7),  # second order: two evaluations a step but the last
])
def test_unet_passes_follow_the_models_scheduler(tmp_path, scheduler, steps, passes):
    scheduler.save_config(tmp_path / "scheduler")
    assert unet_passes(tmp_path, steps) == passes
