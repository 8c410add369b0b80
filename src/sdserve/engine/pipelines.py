"""txt2img / img2img / inpaint over ONE copy of a model's weights.

``LoadedModel`` holds the base (txt2img) pipeline and hands out pipelines by what a loop
needs (``Needs``: the task now; task + control and the like as add-ons land). The others are
views made with ``from_pipe``, which reuses the same module objects, so every view costs one
set of weights. Each call gets a fresh scheduler (they are stateful); ``batching.run_batch``
runs the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .catalog import ModelSpec
from .loading import PIPELINE_CLASSES
from .prompt_syntax import parse_prompt
from .schedulers import get_scheduler

__all__ = ["LoadedModel", "Needs", "make_scheduler", "prompt_warnings"]


def make_scheduler(name: str, base_config: Any) -> Any:
    """A new scheduler of registry ``name`` built on the model's own scheduler config."""
    import diffusers

    entry = get_scheduler(name)
    cls = getattr(diffusers, entry.cls)
    return cls.from_config(base_config, **entry.overrides)


def prompt_warnings(pipe: Any, params: Any) -> list[str]:
    """A warning for each prompt longer than the text encoder reads (CLIP: 77 tokens with
    the start and end markers); diffusers silently drops the rest, the caller should know."""
    if params.prompt_syntax == "a1111":  # read in 75-token chunks: nothing is dropped
        return [w for name in ("prompt", "negative_prompt")
                for w in parse_prompt(getattr(params, name) or "", name).warnings]
    if params.prompt_syntax == "comfyui":  # ComfyUI's chunks too; its syntax guesses nothing
        return []
    tok = pipe.tokenizer
    limit = int(tok.model_max_length)
    out = []
    for name in ("prompt", "negative_prompt"):
        text = getattr(params, name) or ""
        ids = tok(text, truncation=False).input_ids if text else []
        if len(ids) > limit:
            kept = tok.decode(ids[1:limit - 1]).strip()
            out.append(f"{name} is {len(ids) - 2} tokens but the text encoder reads {limit - 2}; "
                       f"everything after \"...{kept[-40:]}\" was ignored")
    return out


@dataclass(frozen=True)
class Needs:
    """What a denoising loop needs of its pipeline; one view is built (and kept) per value."""

    task: str


@dataclass
class LoadedModel:
    """A model in memory: its spec, base pipeline, and task views sharing its modules."""

    spec: ModelSpec
    base: Any
    device: torch.device
    dtype: torch.dtype
    loaded_at: float = field(default_factory=time.time)
    _views: dict[Needs, Any] = field(default_factory=dict)
    # The scheduler config the model shipped with. Every run builds its scheduler from this,
    # never from ``base.scheduler``, which the last txt2img run replaced: one request's
    # overrides (Karras sigmas, trailing spacing) must not leak into the next one's image.
    scheduler_config: Any = field(init=False)

    def __post_init__(self) -> None:
        self.scheduler_config = self.base.scheduler.config

    @property
    def inpaint_unet(self) -> bool:
        """True for dedicated inpainting checkpoints (9 input channels: latents+mask+masked image)."""
        return int(self.base.unet.config.in_channels) == 9

    def pipeline(self, needs: Needs) -> Any:
        """The pipeline for ``needs``, sharing the base pipeline's modules."""
        if needs.task == "txt2img":
            return self.base
        if needs not in self._views:
            view = PIPELINE_CLASSES(self.spec.arch)[needs.task].from_pipe(self.base)
            view.set_progress_bar_config(disable=True)
            self._views[needs] = view
        return self._views[needs]

    def scheduler(self, name: str) -> Any:
        """A fresh scheduler of registry ``name`` on the config this model shipped with."""
        return make_scheduler(name, self.scheduler_config)
