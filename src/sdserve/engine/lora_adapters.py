"""LoRAs on a loaded model: loaded once, kept, switched per denoising loop.

Each LoRA file is loaded with diffusers' own loader (``load_lora_weights``, PEFT backend: kohya /
A1111 and diffusers / PEFT files, SD 1.5 and SDXL) into the model's ONE copy of the weights
(``LoadedModel.base``; the task views made with ``from_pipe`` share its modules, so they see the
adapters too). A loop then activates its set with ``set_adapters(names, weights)`` (a weight per
component when the text encoders' differs from the UNet's: ``LoraRef.text_encoder_weight``), or disables
LoRA when it has none: switching is a few flag and scale assignments, never a disk read.

At most ``MAX_ADAPTERS`` stay loaded per model; the least recently used is deleted to make
room. The adapters' bytes are reported so the engine counts them in the model's size.

A file that fits no layer of the model (a LoRA for another family: SD 1.5 on SDXL), or that
cannot be read, is a ``BadInput`` naming the field, and the model is left as it was: diffusers
removes a half-loaded adapter itself, and so does :func:`ensure_loaded` when the loader raised
after adding one. Pickled files (.pt/.ckpt) are read with torch's ``weights_only``.

With ``compile`` on, loading an adapter changes the UNet's modules, so the compiled UNet is
recompiled on its next call (once per new adapter set shape; switching weights among loaded
adapters does not change the graph's modules). See docs/addons.md.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections import OrderedDict
from typing import Any

import torch

from ..errors import BadInput
from .addon_files import AddonFolders
from .params import LoraRef
from .pipelines import LoadedModel

__all__ = ["ensure_loaded", "activate", "read_lora_file", "MAX_ADAPTERS"]

log = logging.getLogger(__name__)

MAX_ADAPTERS = 8
_names = itertools.count()


def read_lora_file(path: Any, field: str) -> dict[str, torch.Tensor]:
    """A LoRA file's state dict (safetensors, or a pickle read with ``weights_only``)."""
    from pathlib import Path

    p = Path(path)
    try:
        if p.is_dir():
            weights = next((p / n for n in ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
                            if (p / n).is_file()), None)
            if weights is None:
                raise BadInput(field, f"LoRA folder {p.name!r} has no pytorch_lora_weights.safetensors "
                                      "or adapter_model.safetensors")
            p = weights
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise BadInput(field, f"LoRA file {p.name!r} holds no tensor state dict")
        return sd
    except BadInput:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated file, a pickle with code: the caller's file
        raise BadInput(field, f"LoRA file {p.name!r} could not be read ({type(e).__name__}: {e})") from None


def _registry(model: LoadedModel) -> OrderedDict[str, str]:
    """The model's loaded adapters: (name, sha256) key -> PEFT adapter name, LRU order."""
    return model.lora_adapters


def _key(ref: LoraRef) -> str:
    return f"{ref.name}\0{ref.sha256}"


def _adapter_bytes(pipe: Any, adapter: str) -> int:
    total = 0
    for component in (getattr(pipe, n, None) for n in ("unet", "text_encoder", "text_encoder_2")):
        if isinstance(component, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for n, t in component.named_parameters()
                         if f".{adapter}." in n and "lora_" in n)
    return total


def _loaded_anywhere(pipe: Any, adapter: str) -> bool:
    return any(adapter in names for names in pipe.get_list_adapters().values())


def _drop(pipe: Any, adapter: str) -> None:
    if _loaded_anywhere(pipe, adapter):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            pipe.delete_adapters(adapter)


def _load_one(pipe: Any, ref: LoraRef, addons: AddonFolders, field: str) -> str:
    f = addons.find("lora", ref.name, field=field)
    state = read_lora_file(f.path, field)
    adapter = f"lora{next(_names)}"
    family = "SDXL" if getattr(pipe, "text_encoder_2", None) is not None else "SD 1.5"
    try:
        with warnings.catch_warnings():  # PEFT warns that a second adapter is being added: that is the design
            warnings.simplefilter("ignore", UserWarning)
            pipe.load_lora_weights(state, adapter_name=adapter)
    except Exception as e:  # noqa: BLE001 - shapes or keys that fit no layer of this model
        _drop(pipe, adapter)
        first = str(e).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[0] if first else "")
        raise BadInput(field, f"LoRA {f.stem!r} does not fit this {family} model: is it made for another family "
                              f"(SD 1.5 / SDXL)? ({type(e).__name__}: {detail[:300]})") from None
    if not _loaded_anywhere(pipe, adapter):
        raise BadInput(field, f"LoRA {f.stem!r} matches no layer of this {family} model: is it made for another "
                              "family (SD 1.5 / SDXL) or another kind of network?")
    return adapter


def ensure_loaded(model: LoadedModel, refs: tuple[LoraRef, ...], addons: AddonFolders, field: str = "loras") -> int:
    """Load the LoRAs of ``refs`` not yet on ``model`` (LRU-evicting beyond MAX_ADAPTERS);
    returns the change in bytes the model holds."""
    reg = _registry(model)
    pipe = model.base
    delta = 0
    for ref in refs:
        key = _key(ref)
        if key in reg:
            reg.move_to_end(key)
            continue
        keep = {_key(r) for r in refs}
        while len(reg) >= MAX_ADAPTERS:
            old = next((k for k in reg if k not in keep), None)
            if old is None:
                break
            adapter = reg.pop(old)
            delta -= _adapter_bytes(pipe, adapter)
            _drop(pipe, adapter)
        adapter = _load_one(pipe, ref, addons, field)
        reg[key] = adapter
        delta += _adapter_bytes(pipe, adapter)
        log.info("loaded LoRA %s as %s on %s", ref.name, adapter, model.spec.id)
    return delta


def activate(model: LoadedModel, refs: tuple[LoraRef, ...]) -> None:
    """Make ``refs`` (already loaded) the active adapters with their weights, or none."""
    reg = _registry(model)
    pipe = model.base
    if not reg:
        return  # nothing was ever loaded: the model has no LoRA layers
    if not refs:
        pipe.disable_lora()
        return
    pipe.enable_lora()
    names = [reg[_key(r)] for r in refs]
    pipe.set_adapters(names, [_weights(pipe, name, r) for name, r in zip(names, refs, strict=True)])


def _weights(pipe: Any, adapter: str, ref: LoraRef) -> float | dict[str, float]:
    """One weight for every component, or (UNet and text encoders weighted apart) diffusers'
    per-component dict, naming only the components this adapter has layers in (a component
    left out of the dict would get weight 1)."""
    if ref.te_weight == ref.weight:
        return ref.weight
    return {part: ref.weight if part == "unet" else ref.te_weight
            for part, adapters in pipe.get_list_adapters().items() if adapter in adapters}
