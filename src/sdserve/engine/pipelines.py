"""txt2img / img2img / inpaint over ONE copy of a model's weights.

``LoadedModel`` holds the base (txt2img) pipeline and hands out pipelines by what a loop
needs (``Needs``: the task now; task + control and the like as add-ons land). The others are
views made with ``from_pipe``, which reuses the same module objects, so every view costs one
set of weights. Each call gets a fresh scheduler (they are stateful); ``batching.run_batch``
runs the loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
    tok = pipe.tokenizer or pipe.tokenizer_2  # the SDXL refiner has only the second
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
    # ControlNet names, one per unit in order (empty: no ControlNet).
    control: tuple[str, ...] = ()
    # An add-on VAE's name (engine.addons) replacing the model's own; None: the model's.
    vae: str | None = None


@dataclass
class LoadedModel:
    """A model in memory: its spec, base pipeline, and task views sharing its modules."""

    spec: ModelSpec
    base: Any
    device: torch.device
    dtype: torch.dtype
    loaded_at: float = field(default_factory=time.time)
    _views: dict[Needs, Any] = field(default_factory=dict)
    # The engine's ControlNets (engine.controlnets), for views that need them.
    controlnets: Any = None
    # The engine's IP-Adapters (engine.ip_adapters), loaded around the calls that use one.
    ip_adapters: Any = None
    _control_views: dict[Needs, tuple[list[Any], Any]] = field(default_factory=dict)
    # Add-ons loaded into the base pipeline's modules (so every view has them): LoRA key ->
    # PEFT adapter name in LRU order (engine.lora_adapters); embedding name -> its file hash
    # (engine.embeddings).
    lora_adapters: OrderedDict[str, str] = field(default_factory=OrderedDict)
    embeddings: dict[str, str] = field(default_factory=dict)
    # The engine's loader of add-on VAEs for this model (name -> AutoencoderKL on the device,
    # cached under the memory budget); None: this model takes no VAE override.
    vaes: Callable[[str], Any] | None = None
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
        pipe = self._control_view(replace(needs, vae=None)) if needs.control else self._task_view(needs.task)
        if needs.vae is None:
            return pipe
        if self.vaes is None:
            raise ValueError(f"{self.spec.id} was loaded without a VAE loader")
        vae = self.vaes(needs.vae)
        vae.use_tiling = pipe.vae.use_tiling  # the engine tiles the model's VAE per loop size
        # A view per call, not kept: a kept view would hold the VAE after the memory cache
        # let it go. from_pipe only wraps the same modules, so this costs no weights.
        view = type(pipe).from_pipe(pipe, vae=vae)
        view.set_progress_bar_config(disable=True)
        return view

    def _task_view(self, task: str) -> Any:
        cls = PIPELINE_CLASSES(self.spec.arch)[task]
        if task == "txt2img" or type(self.base) is cls:  # a refiner's base is its img2img pipeline
            return self.base
        needs = Needs(task=task)
        if needs not in self._views:
            view = cls.from_pipe(self.base)
            view.set_progress_bar_config(disable=True)
            self._views[needs] = view
        return self._views[needs]

    def _control_view(self, needs: Needs) -> Any:
        """A ControlNet pipeline over the base's modules; the ControlNets come from the
        engine's store (loaded once), several as one MultiControlNetModel."""
        from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

        assert self.controlnets is not None, "the engine gives every model its ControlNet store"
        nets = [self.controlnets.get(name, self.base.unet, f"control[{i}].model") for i, name in enumerate(needs.control)]
        built = self._control_views.get(needs)
        # Rebuilt when the store reloaded a ControlNet (its file changed on disk).
        if built is None or any(a is not b for a, b in zip(built[0], nets, strict=True)):
            net = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
            view = PIPELINE_CLASSES(self.spec.arch, controlnet=True)[needs.task].from_pipe(self.base, controlnet=net)
            view.set_progress_bar_config(disable=True)
            built = self._control_views[needs] = (nets, view)
        return built[1]

    def scheduler(self, name: str) -> Any:
        """A fresh scheduler of registry ``name`` on the config this model shipped with."""
        return make_scheduler(name, self.scheduler_config)
