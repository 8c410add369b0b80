"""GFPGAN v1.3 / v1.4 ("GFPGANv1Clean"): a U-Net encoder whose features condition a
StyleGAN2 decoder (spatial feature transform), restoring one aligned 512x512 face.

Written from the paper and the published architecture; module names follow TencentARC's
``gfpganv1_clean_arch.py``, so the official ``GFPGANv1.4.pth`` (``params_ema``) loads
strictly. The shape (resolution, channels per level, style width, MLP depth, one latent
per layer or one for all, SFT on half the channels or all) is read from the state dict's
tensor shapes, so the tiny test network in the same key layout loads through the same path.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

from .stylegan2 import StyleGAN2DecoderSFT

__all__ = ["GFPGANv1Clean", "gfpgan_from_state_dict", "is_gfpgan"]


class _ResBlock(nn.Module):
    """Two 3x3 convs with a bilinear 2x resize between, and a resized 1x1 skip."""

    def __init__(self, cin: int, cout: int, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.interpolate(out, scale_factor=self.factor, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), 0.2)
        skip: torch.Tensor = self.skip(F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False))
        return out + skip


def _sft_head(ch: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(ch, out, 3, 1, 1))


class GFPGANv1Clean(nn.Module):
    """``unet[r]``/``dec[r]``: encoder/decoder channels at resolution ``r`` (4 .. out_size)."""

    def __init__(self, log_size: int, unet: dict[int, int], dec: dict[int, int], style_dim: int = 512,
                 num_mlp: int = 8, sft_half: bool = True) -> None:
        super().__init__()
        self.log_size, self.style_dim = log_size, style_dim
        top = 2 ** log_size
        self.conv_body_first = nn.Conv2d(3, unet[top], 1)
        self.conv_body_down = nn.ModuleList(
            _ResBlock(unet[2 ** i], unet[2 ** (i - 1)], 0.5) for i in range(log_size, 2, -1))
        self.final_conv = nn.Conv2d(unet[4], unet[4], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(
            _ResBlock(unet[2 ** (i - 1)], unet[2 ** i], 2) for i in range(3, log_size + 1))
        # Intermediate RGB outputs (a training loss only); kept for the file's keys.
        self.toRGB = nn.ModuleList(nn.Conv2d(unet[2 ** i], 3, 1) for i in range(3, log_size + 1))
        # One latent per decoder layer ("different_w", as v1.3/v1.4 are trained): fed to the
        # decoder directly, without its style MLP.
        self.final_linear = nn.Linear(unet[4] * 16, (log_size * 2 - 2) * style_dim)
        self.stylegan_decoder = StyleGAN2DecoderSFT(log_size, dec, style_dim, num_mlp, sft_half)
        sft = [unet[2 ** i] if sft_half else unet[2 ** i] * 2 for i in range(3, log_size + 1)]
        self.condition_scale = nn.ModuleList(_sft_head(unet[2 ** i], s) for i, s in zip(range(3, log_size + 1), sft))
        self.condition_shift = nn.ModuleList(_sft_head(unet[2 ** i], s) for i, s in zip(range(3, log_size + 1), sft))

    @property
    def size(self) -> int:
        return int(2 ** self.log_size)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, 3, size, size] RGB in [-1, 1] -> restored, same range. The decoder's noise is
        drawn from ``generator`` (a CPU one: the same face restores to the same pixels)."""
        feat = F.leaky_relu(self.conv_body_first(x), 0.2)
        skips: list[torch.Tensor] = []
        for down in self.conv_body_down:
            feat = down(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)
        latent = self.final_linear(feat.flatten(1)).view(x.shape[0], -1, self.style_dim)
        conditions: list[torch.Tensor] = []
        for skip, up, scale, shift in zip(skips, self.conv_body_up, self.condition_scale, self.condition_shift,
                                          strict=True):
            feat = up(feat + skip)
            conditions += [scale(feat), shift(feat)]
        noise = [torch.randn(s, generator=generator).to(x.device, x.dtype)
                 for s in self.stylegan_decoder.noise_shapes(x.shape[0])]
        out: torch.Tensor = self.stylegan_decoder(latent, conditions, noise)
        return out


def is_gfpgan(sd: dict[str, torch.Tensor]) -> bool:
    return "conv_body_first.weight" in sd and "stylegan_decoder.constant_input.weight" in sd


def gfpgan_from_state_dict(sd: dict[str, torch.Tensor]) -> GFPGANv1Clean:
    """The network whose shape ``sd`` describes, with ``sd`` loaded strictly (a missing or
    extra key, or a shape that does not fit, raises)."""
    n_down = sum(1 for k in sd if re.fullmatch(r"conv_body_down\.\d+\.conv1\.weight", k))
    log_size = n_down + 2
    unet = {2 ** log_size: sd["conv_body_first.weight"].shape[0], 4: sd["final_conv.weight"].shape[0]}
    for i in range(n_down):  # block i: 2**(log_size-i) -> 2**(log_size-i-1)
        unet[2 ** (log_size - i - 1)] = sd[f"conv_body_down.{i}.conv2.weight"].shape[0]
    dec = {4: sd["stylegan_decoder.constant_input.weight"].shape[1]}
    for j in range(log_size - 2):
        dec[2 ** (j + 3)] = sd[f"stylegan_decoder.style_convs.{2 * j}.modulated_conv.weight"].shape[1]
    style_dim = sd["stylegan_decoder.style_conv1.modulated_conv.modulation.weight"].shape[1]
    num_mlp = sum(1 for k in sd if re.fullmatch(r"stylegan_decoder\.style_mlp\.\d+\.weight", k))
    sft_half = sd["condition_scale.0.2.weight"].shape[0] == unet[8]
    if sd["final_linear.weight"].shape[0] != (log_size * 2 - 2) * style_dim:
        raise ValueError("a GFPGAN with one style latent for all layers (not v1.3/v1.4's one per layer)")
    with torch.device("meta"):  # no random init of 87M parameters only to overwrite them
        net = GFPGANv1Clean(log_size, unet, dec, style_dim, num_mlp, sft_half)
    net.load_state_dict(sd, strict=True, assign=True)
    return net
