"""ESRGAN / Real-ESRGAN's RRDBNet, built from a state dict in either key layout.

Written from the published architecture (Wang et al., "ESRGAN", 2018; "Real-ESRGAN", 2021):
a first conv, a trunk of residual-in-residual dense blocks (each three 5-conv dense blocks
with 0.2 residual scaling), a trunk conv added back to the first conv's features, then
nearest-neighbour x2 upsampling steps each followed by a conv, a high-resolution conv and
the last conv. Real-ESRGAN's x2 and x1 models pixel-unshuffle the input first (x2 -> 4x
the channels at half the size), so the same x4 body gives x2 and x1 output.

Two key layouts exist in the wild:
- "old" ESRGAN (the original repo and most community models such as 4x-UltraSharp):
  ``model.0`` first conv, ``model.1.sub.N.RDB1.conv1.0`` trunk, ``model.1.sub.<nb>`` trunk
  conv, then upsampling convs at ``model.3``, ``model.6``, ... and the two last convs;
- "new" BasicSR / Real-ESRGAN: ``conv_first``, ``body.N.rdb1.conv1``, ``conv_body``,
  ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``.
Old keys are renamed to the new ones; the scale, widths and block count are read from the
tensors' shapes, so no configuration travels with the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["RRDBNet", "is_rrdbnet", "rrdbnet_from_state_dict", "UnsupportedUpscaler"]


class UnsupportedUpscaler(ValueError):
    """The state dict is not an architecture this loader builds (the message says why)."""


class _DenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output (dense)."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        out: torch.Tensor = self.conv5(torch.cat(feats, 1)) * 0.2 + x
        return out


class _RRDB(nn.Module):
    """Residual in residual: three dense blocks, the sum scaled by 0.2 and added back."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1 = _DenseBlock(nf, gc)
        self.rdb2 = _DenseBlock(nf, gc)
        self.rdb3 = _DenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x
        return out


class RRDBNet(nn.Module):
    """The network; ``scale`` is its output/input size ratio (1, 2, 4, 8, ...)."""

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, nb: int = 23, gc: int = 32,
                 n_up: int = 2, unshuffle: int = 1) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.scale = 2**n_up // unshuffle
        self.in_nc, self.out_nc = in_nc, out_nc
        self.conv_first = nn.Conv2d(in_nc * unshuffle**2, nf, 3, 1, 1)
        self.body = nn.Sequential(*(_RRDB(nf, gc) for _ in range(nb)))
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.ups = nn.ModuleList(nn.Conv2d(nf, nf, 3, 1, 1) for _ in range(n_up))
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in self.ups:
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        out: torch.Tensor = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
        return out


_OLD_BODY = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_OLD_TOP = re.compile(r"^model\.(\d+)\.(weight|bias)$")
_OLD_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_NEW_UP = re.compile(r"^conv_up(\d+)\.(weight|bias)$")


def is_rrdbnet(sd: Mapping[str, torch.Tensor]) -> bool:
    """Whether the keys are one of RRDBNet's two layouts."""
    return "conv_first.weight" in sd and "body.0.rdb1.conv1.weight" in sd or \
        "model.0.weight" in sd and "model.1.sub.0.RDB1.conv1.0.weight" in sd


def _from_old(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Old ESRGAN keys renamed to the new layout (``ups.N`` for the upsampling convs)."""
    out: dict[str, torch.Tensor] = {}
    top: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in sd.items():
        if m := _OLD_BODY.match(key):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = t
        elif m := _OLD_TRUNK.match(key):
            out[f"conv_body.{m[2]}"] = t
        elif m := _OLD_TOP.match(key):
            top.setdefault(int(m[1]), {})[m[2]] = t
        else:
            raise UnsupportedUpscaler(f"unexpected key {key!r} for an ESRGAN (RRDBNet) model")
    # model.0 is the first conv; after the trunk (model.1) every conv index in order is an
    # upsampling conv except the last two (the high-resolution conv and the last conv).
    indices = sorted(top)
    if len(indices) < 3 or indices[0] != 0:
        raise UnsupportedUpscaler("the ESRGAN layers after the trunk are missing")
    *ups, hr, last = indices[1:]
    for name, idx in [("conv_first", 0), *((f"ups.{n}", i) for n, i in enumerate(ups)),
                      ("conv_hr", hr), ("conv_last", last)]:
        for kind, t in top[idx].items():
            out[f"{name}.{kind}"] = t
    return out


def _from_new(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        m = _NEW_UP.match(key)
        out[f"ups.{int(m[1]) - 1}.{m[2]}" if m else key] = t
    return out


def rrdbnet_from_state_dict(sd: Mapping[str, torch.Tensor]) -> RRDBNet:
    """The network the weights describe, loaded (strict: every tensor used, none missing)."""
    if not is_rrdbnet(sd):
        raise UnsupportedUpscaler("not an ESRGAN/Real-ESRGAN (RRDBNet) state dict")
    new = _from_old(sd) if "model.0.weight" in sd else _from_new(sd)
    try:
        nf, in_ch = new["conv_first.weight"].shape[:2]
        out_nc = new["conv_last.weight"].shape[0]
        gc = new["body.0.rdb1.conv1.weight"].shape[0]
    except KeyError as e:
        raise UnsupportedUpscaler(f"missing tensor {e.args[0]}") from None
    nb = 1 + max(int(k.split(".")[1]) for k in new if k.startswith("body."))
    n_up = sum(1 for k in new if k.startswith("ups.") and k.endswith(".weight"))
    # Real-ESRGAN x2/x1 pixel-unshuffle the input: the first conv sees 4x/16x the channels.
    ratio = in_ch // out_nc
    unshuffle = math.isqrt(ratio) if in_ch % out_nc == 0 else 1
    if unshuffle**2 != ratio:
        unshuffle = 1
    in_nc = in_ch // unshuffle**2
    if 2**n_up % unshuffle:
        raise UnsupportedUpscaler(f"{n_up} upsampling steps with a {unshuffle}x unshuffle is not an integer scale")
    net = RRDBNet(in_nc, out_nc, nf, nb, gc, n_up, unshuffle)
    try:
        net.load_state_dict(new, strict=True)
    except RuntimeError as e:
        raise UnsupportedUpscaler(f"weights do not fit RRDBNet: {str(e).splitlines()[0]}") from None
    return net
