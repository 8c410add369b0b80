"""A VAE from the add-on folders (A1111's ``models/VAE``) decoding a request instead of the
model's own.

A1111 loads a VAE file's weights into the checkpoint's VAE architecture; so does this: a single
file (``.safetensors``; ``.pt``/``.ckpt`` with torch's ``weights_only``), in the original LDM key
layout or diffusers', is loaded into a VAE built from the model's own VAE config (its scaling
factor stays the model's), strictly: a file for another architecture is a 4xx naming the
field, never a half-loaded decoder. A diffusers VAE folder brings its config, which must
match the model's latent space (latent channels and block widths).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import BadInput
from .addon_files import AddonFile

__all__ = ["load_addon_vae", "vae_cache_key"]

# Config entries that decide whether a VAE's weights fit a model's latent space.
_SHAPE_KEYS = ("latent_channels", "block_out_channels", "in_channels", "out_channels", "layers_per_block")


def vae_cache_key(file: AddonFile, model_id: str) -> str:
    """The memory cache's id of ``file`` built for ``model_id`` (a changed file is a new entry)."""
    return f"vae:{file.name}@{model_id}#{file.mtime:.0f}"


def _state_dict(path: Path, field: str) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise BadInput(field, f"{path.name} holds no state dict")
    return sd


def _wrong_family(field: str, name: str, why: str) -> BadInput:
    return BadInput(field, f"{name} is not a VAE for this model ({why}); choose a VAE of the model's "
                           "family (SD 1.5 and SDXL VAEs share a latent space, other families do not)")


def load_addon_vae(file: AddonFile, base_vae: Any, dtype: torch.dtype, field: str = "vae") -> Any:
    """The VAE in ``file`` as an AutoencoderKL on the CPU in ``dtype``, shaped like ``base_vae``."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    base_cfg = dict(base_vae.config)
    if file.is_dir:
        try:
            vae = AutoencoderKL.from_pretrained(str(file.path), dtype=dtype, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - unreadable or not a VAE folder: the caller's file
            raise BadInput(field, f"{file.name} could not be read as a diffusers VAE folder "
                                  f"({type(e).__name__})") from None
        for key in _SHAPE_KEYS:
            if list(_tuple(vae.config.get(key))) != list(_tuple(base_cfg.get(key))):
                raise _wrong_family(field, file.name, f"{key} {vae.config.get(key)} vs the model's {base_cfg.get(key)}")
        return vae
    try:
        sd = _state_dict(file.path, field)
    except BadInput:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt file, or a pickle weights_only refuses
        raise BadInput(field, f"{file.filename} could not be read ({type(e).__name__})") from None
    if not any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in sd):
        sd = convert_ldm_vae_checkpoint(sd, base_cfg)  # A1111's files: the original LDM key layout
    vae = AutoencoderKL.from_config(base_cfg)
    try:
        vae.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise _wrong_family(field, file.filename, first[1].strip() if len(first) > 1 else "its tensors do not fit") \
            from None
    return vae.to(dtype)


def _tuple(v: Any) -> tuple[Any, ...]:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)
