"""Torch-side pieces of ``sdserve bench --controlnet N``: a random-weight ControlNet shaped
for the bench model (what ``ControlNetModel.from_unet`` builds, in the real folder format)
and the FLOPs its passes add to one image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from .benchmark import unet_passes

__all__ = ["write_bench_controlnet", "controlnet_flops_per_image"]


def write_bench_controlnet(model_dir: Path, folder: Path, name: str = "bench-controlnet") -> str:
    """A ControlNet for the model at ``model_dir`` (random weights, seed 0) under ``folder``."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    out = folder / name
    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model_dir / "unet"))
        ControlNetModel.from_unet(unet, load_weights_from_unet=False).save_pretrained(str(out))
    return name


def controlnet_flops_per_image(model_dir: Path, arch: str, width: int, height: int, steps: int,
                               guidance: float) -> float:
    """FLOPs one ControlNet unit adds to an image: its pass at every UNet pass (x2 rows with
    CFG), counted on a meta-device copy (no compute, no memory)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    cfg = 2 if guidance > 1 else 1
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(model_dir / "unet"))
        net = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
        extra: dict[str, Any] = {}
        if arch == "sdxl":
            pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
            extra["added_cond_kwargs"] = {"text_embeds": torch.zeros(cfg, pooled), "time_ids": torch.zeros(cfg, 6)}
        with FlopCounterMode(display=False) as fc:
            net(torch.zeros(cfg, 4, height // 8, width // 8), torch.tensor(10),
                encoder_hidden_states=torch.zeros(cfg, 77, unet.config.cross_attention_dim),
                controlnet_cond=torch.zeros(cfg, 3, height, width), **extra)
    return float(fc.get_total_flops() * unet_passes(model_dir, steps))
