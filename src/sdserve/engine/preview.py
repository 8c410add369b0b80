"""Cheap live previews: latents to RGB by a fixed linear map, no VAE decode.

Each latent channel contributes a fixed colour; the factors are least-squares fits of VAE
decodes to latents, published with ComfyUI (comfy/latent_formats.py) and used by most UIs.
A preview costs a 4x3 matmul on a 1/8-size image, so it can run every few steps.
"""

from __future__ import annotations

import io

import torch
from PIL import Image

__all__ = ["latents_to_preview_png"]

_FACTORS = {
    "sd15": ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
              [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    "sdxl": ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
              [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
}


def latents_to_preview_png(latents: torch.Tensor, arch: str, index: int = 0) -> bytes:
    """A small PNG (1/8 of the output size) approximating image ``index`` of ``latents``."""
    factors, bias = _FACTORS.get(arch, _FACTORS["sd15"])
    lat = latents[index].detach().float().cpu()  # (4, h, w)
    rgb = torch.einsum("chw,cr->rhw", lat, torch.tensor(factors)) + torch.tensor(bias)[:, None, None]
    pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()
