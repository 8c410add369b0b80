"""txt2img / img2img / inpaint over ONE copy of a model's weights.

``LoadedModel`` holds the base (txt2img) pipeline; the other tasks are views made with
``from_pipe``, which reuses the same module objects, so three tasks cost one set of weights.
Each call gets a fresh scheduler (they are stateful) and per-image CPU generators.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ..errors import Canceled
from .catalog import ModelSpec
from .loading import PIPELINE_CLASSES
from .params import GenerationParams, StepInfo
from .preview import latents_to_preview_png
from .schedulers import get_scheduler

__all__ = ["LoadedModel", "make_scheduler"]


def make_scheduler(name: str, base_config: Any) -> Any:
    """A new scheduler of registry ``name`` built on the model's own scheduler config."""
    import diffusers

    entry = get_scheduler(name)
    cls = getattr(diffusers, entry.cls)
    return cls.from_config(base_config, **entry.overrides)


@dataclass
class LoadedModel:
    """A model in memory: its spec, base pipeline, and task views sharing its modules."""

    spec: ModelSpec
    base: Any
    device: torch.device
    dtype: torch.dtype
    loaded_at: float = field(default_factory=time.time)
    _views: dict[str, Any] = field(default_factory=dict)

    @property
    def inpaint_unet(self) -> bool:
        """True for dedicated inpainting checkpoints (9 input channels: latents+mask+masked image)."""
        return int(self.base.unet.config.in_channels) == 9

    def pipeline(self, task: str) -> Any:
        if task == "txt2img":
            return self.base
        if task not in self._views:
            view = PIPELINE_CLASSES(self.spec.arch)[task].from_pipe(self.base)
            view.set_progress_bar_config(disable=True)
            self._views[task] = view
        return self._views[task]

    def run(
        self,
        params: GenerationParams,
        init_image: Image.Image | None,
        mask: Image.Image | None,
        on_step: Callable[[StepInfo], None] | None,
        cancel: Callable[[], bool] | None,
    ) -> list[Image.Image]:
        """Denoise ``params`` (already resolved) and return one PIL image per seed."""
        pipe = self.pipeline(params.task)
        pipe.scheduler = make_scheduler(params.scheduler or "euler", self.base.scheduler.config)
        # One CPU generator per image: the same seed gives the same initial noise whatever
        # the device and whatever else shares the batch.
        generators = [torch.Generator("cpu").manual_seed(s) for s in params.seeds]
        arch = self.spec.arch

        def callback(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
            if cancel is not None and cancel():
                raise Canceled("job canceled")
            if on_step is not None:
                latents = kw.get("latents")
                preview = (lambda: latents_to_preview_png(latents, arch)) if latents is not None else None
                on_step(StepInfo(step=i + 1, total=int(getattr(p, "num_timesteps", 0) or params.steps or 0),
                                 preview=preview))
            return kw

        kwargs: dict[str, Any] = dict(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt or None,
            num_inference_steps=params.steps,
            guidance_scale=params.guidance,
            num_images_per_prompt=params.n,
            generator=generators,
            output_type="pil",
            callback_on_step_end=callback,
        )
        if params.task == "txt2img":
            kwargs.update(width=params.width, height=params.height)
        else:
            kwargs.update(image=init_image, strength=params.strength)
        if params.task == "inpaint":
            kwargs.update(mask_image=mask, width=params.width, height=params.height)
        with torch.inference_mode():
            out = pipe(**kwargs)
        return list(out.images)
