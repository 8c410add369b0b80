"""A tiny random-weight VAE in the two on-disk forms A1111 users meet: a single
``.safetensors`` file in the original LDM key layout (as ``vae-ft-mse-840000-ema-pruned``),
and a diffusers folder. Demo mode and ``make-tiny`` put them in the ``VAE`` add-on folder, so
``sd_vae`` / ``vae`` can be tried without downloading anything.

Its architecture is the tiny models' own (read from the SD 1.5 layout's ``vae/config.json``
when it is there, else the demo architecture that demo mode is about to write), with other
random weights: decoding through it changes every image, as a real VAE swap does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

__all__ = ["TINY_VAE", "write_tiny_vaes"]

TINY_VAE = "tiny-vae"  # the file's name without suffix; the folder is tiny-vae-diffusers


def write_tiny_vaes(vae_dir: Path, models_root: Path) -> list[Path]:
    """Write both forms under ``vae_dir`` (kept if present); ``models_root`` holds the tiny
    model layouts (``sd15/base/vae``) whose VAE shape they take."""
    from diffusers import AutoencoderKL

    from .ldm_export import VAE_PREFIX, _vae_to_ldm
    from .tiny import _vae

    file, folder = vae_dir / f"{TINY_VAE}.safetensors", vae_dir / f"{TINY_VAE}-diffusers"
    if file.is_file() and (folder / "config.json").is_file():
        return [file, folder]
    torch.manual_seed(7)  # not the models' seed: other weights than their own VAE
    config = models_root / "sd15" / "base" / "vae" / "config.json"
    vae = AutoencoderKL.from_config(json.loads(config.read_text())) if config.is_file() else _vae(0.18215, demo=True)
    vae_dir.mkdir(parents=True, exist_ok=True)
    # A1111's standalone VAE files carry the LDM keys without the checkpoint's prefix.
    ldm = _vae_to_ldm(vae.state_dict(), dict(vae.config))
    save_file({k.removeprefix(VAE_PREFIX): v.contiguous() for k, v in ldm.items()}, str(file))
    vae.save_pretrained(str(folder), safe_serialization=True)
    return [file, folder]
