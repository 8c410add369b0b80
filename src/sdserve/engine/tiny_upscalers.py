"""Tiny random-weight upscalers in the real file formats, for demo mode, make-tiny and tests.

Two files, one per key layout the RRDBNet loader reads: an "old" ESRGAN x4 (plain state
dict, ``model.N`` keys, as community models ship) and a Real-ESRGAN x2plus (``params_ema``
wrapper, BasicSR keys, pixel-unshuffled input). Their output is noise; they let every
upscale route run without a download.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .upscalers.rrdbnet import RRDBNet

__all__ = ["TINY_UPSCALERS", "write_tiny_upscalers"]

# file name below the upscaler home folder (models/ESRGAN) -> (layout, scale)
TINY_UPSCALERS = {"tiny-ESRGAN-4x.pth": ("old", 4), "tiny-RealESRGAN_x2plus.pth": ("new", 2)}


def _old_keys(net: RRDBNet) -> dict[str, torch.Tensor]:
    """``net``'s weights under the original ESRGAN repository's key names."""
    out: dict[str, torch.Tensor] = {}
    n_up = len(net.ups)
    tops = {"conv_first": 0, **{f"ups.{i}": 3 + 3 * i for i in range(n_up)},
            "conv_hr": 3 + 3 * n_up - 1, "conv_last": 3 + 3 * n_up + 1}
    nb = len(net.body)
    for key, t in net.state_dict().items():
        head, _, kind = key.rpartition(".")
        if head.startswith("body."):
            _, i, rdb, conv = head.split(".")
            out[f"model.1.sub.{i}.RDB{rdb[-1]}.{conv}.0.{kind}"] = t
        elif head == "conv_body":
            out[f"model.1.sub.{nb}.{kind}"] = t
        else:
            out[f"model.{tops[head]}.{kind}"] = t
    return out


def _new_keys(net: RRDBNet) -> dict[str, torch.Tensor]:
    return {(f"conv_up{int(k.split('.')[1]) + 1}.{k.split('.')[2]}" if k.startswith("ups.") else k): t
            for k, t in net.state_dict().items()}


def write_tiny_upscalers(folder: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the tiny upscalers into ``folder`` (the upscaler home); the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, (layout, scale)) in enumerate(TINY_UPSCALERS.items()):
        path = folder / name
        if path.exists() and not overwrite:
            continue
        torch.manual_seed(1234 + i)
        net = RRDBNet(nf=8, nb=1, gc=4, n_up=2, unshuffle=4 // scale)
        sd = {k: v.contiguous() for k, v in (_old_keys(net) if layout == "old" else _new_keys(net)).items()}
        torch.save(sd if layout == "old" else {"params_ema": sd}, path)
        written.append(path)
    return written
