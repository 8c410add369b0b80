"""The ComfyUI names of engine things, for pages that write a workflow (the playground's
"copy as ComfyUI workflow"): a scheduler's ``sampler_name`` + ``scheduler`` pair and a
model's ``ckpt_name``, each the first that resolves back to it."""

from __future__ import annotations

from sdserve.engine.catalog import Catalog
from .checkpoints import checkpoint_name
from .samplers import SamplerRefused, resolve_comfy, sampler_choices, scheduler_choices

__all__ = ["comfy_sampler_pairs", "comfy_checkpoints"]


def comfy_sampler_pairs() -> dict[str, tuple[str, str]]:
    """Engine scheduler name -> ComfyUI (sampler_name, scheduler) that runs it."""
    out: dict[str, tuple[str, str]] = {}
    for sampler in sampler_choices():
        for schedule in scheduler_choices():
            try:
                entry = resolve_comfy(sampler, schedule)
            except SamplerRefused:
                continue
            out.setdefault(entry.name, (sampler, schedule))
    return out


def comfy_checkpoints(catalog: Catalog) -> dict[str, str]:
    """Catalog id -> the ckpt_name ComfyUI workflows use for it."""
    return {spec.id: checkpoint_name(spec) for spec in catalog}
