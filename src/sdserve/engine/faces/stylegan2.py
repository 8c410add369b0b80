"""The StyleGAN2 decoder of GFPGAN ("clean" version: plain torch ops, no custom CUDA kernels).

Written from the GFPGAN paper and the published architecture; the module and parameter
names follow TencentARC's ``stylegan2_clean_arch.py`` so that the official weight files'
``stylegan_decoder.*`` keys load as they are. Channel counts are arguments (read from a
state dict by ``gfpgan.py``), so the tiny test networks share this code.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ModulatedConv2d", "StyleConv", "ToRGB", "ConstantInput", "StyleGAN2DecoderSFT"]


class _NormStyle(nn.Module):
    """Pixel norm of a style vector (no parameters: index 0 of ``style_mlp``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """A conv whose weight is scaled per input channel by the style, then (optionally)
    normalised per output channel; applied per sample as a grouped conv."""

    def __init__(self, cin: int, cout: int, k: int, style_dim: int, *, demodulate: bool = True,
                 upsample: bool = False) -> None:
        super().__init__()
        self.cout, self.k, self.demodulate, self.upsample = cout, k, demodulate, upsample
        self.modulation = nn.Linear(style_dim, cin)
        self.weight = nn.Parameter(torch.randn(1, cout, cin, k, k) / math.sqrt(cin * k * k))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, cin = x.shape[:2]
        w = self.weight * self.modulation(style).view(b, 1, cin, 1, 1)
        if self.demodulate:
            w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        h, wd = x.shape[2:]
        out = F.conv2d(x.reshape(1, b * cin, h, wd), w.reshape(b * self.cout, cin, self.k, self.k),
                       padding=self.k // 2, groups=b)
        return out.view(b, self.cout, *out.shape[2:])


class StyleConv(nn.Module):
    """Modulated 3x3 conv, scaled noise, bias, leaky ReLU (the sqrt(2) gain of the original)."""

    def __init__(self, cin: int, cout: int, style_dim: int, *, upsample: bool = False) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(cin, cout, 3, style_dim, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.modulated_conv(x, style) * math.sqrt(2) + self.weight * noise + self.bias
        return F.leaky_relu(out, 0.2)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation), added to the upsampled running image."""

    def __init__(self, cin: int, style_dim: int, *, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(cin, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, size, size))


class StyleGAN2DecoderSFT(nn.Module):
    """StyleGAN2 synthesis from 4x4 up to ``2**log_size``, with GFPGAN's spatial feature
    transform: after the first conv of each resolution, features (all of them, or the second
    half with ``sft_half``) become ``feat * scale + shift`` from the encoder's conditions.

    ``channels[r]``: feature channels at resolution ``r`` (4, 8, ..., 2**log_size).
    """

    def __init__(self, log_size: int, channels: dict[int, int], style_dim: int, num_mlp: int,
                 sft_half: bool) -> None:
        super().__init__()
        self.log_size, self.sft_half = log_size, sft_half
        mlp: list[nn.Module] = [_NormStyle()]
        for _ in range(num_mlp):  # kept for the weight file's keys: GFPGAN feeds latents directly
            mlp += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2)]
        self.style_mlp = nn.Sequential(*mlp)
        self.constant_input = ConstantInput(channels[4])
        self.style_conv1 = StyleConv(channels[4], channels[4], style_dim)
        self.to_rgb1 = ToRGB(channels[4], style_dim, upsample=False)
        self.num_layers = (log_size - 2) * 2 + 1
        self.num_latent = log_size * 2 - 2
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        # The stored noise maps the weight files carry (unused: noise is drawn per call).
        self.noises = nn.Module()
        for i in range(self.num_layers):
            r = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.zeros(1, 1, r, r))
        cin = channels[4]
        for lvl in range(3, log_size + 1):
            cout = channels[2 ** lvl]
            self.style_convs.append(StyleConv(cin, cout, style_dim, upsample=True))
            self.style_convs.append(StyleConv(cout, cout, style_dim))
            self.to_rgbs.append(ToRGB(cout, style_dim))
            cin = cout

    def noise_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """The shape of each layer's noise input (what :meth:`forward` takes)."""
        return [(batch, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(self.num_layers)]

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor],
                noise: list[torch.Tensor]) -> torch.Tensor:
        """``latent``: [B, num_latent, style_dim] (one w per layer); ``conditions``: scale,
        shift, scale, shift, ... per resolution from 8; returns RGB in about [-1, 1]."""
        out = self.constant_input.weight.expand(latent.shape[0], -1, -1, -1)
        out = self.style_conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1
            out = self.style_convs[2 * j](out, latent[:, i], noise[i])
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if self.sft_half:
                    keep, sft = out.split(out.shape[1] // 2, dim=1)
                    out = torch.cat([keep, sft * scale + shift], dim=1)
                else:
                    out = out * scale + shift
            out = self.style_convs[2 * j + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        rgb: torch.Tensor = skip
        return rgb
