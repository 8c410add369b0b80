"""Tiny random-weight ControlNets in the real on-disk formats, for demo mode, make-tiny and
the tests (engine.tiny writes the base models they belong to).

Written under ``ROOT/ControlNet/`` (A1111's folder name), per family (SD 1.5 and SDXL):

* ``tiny-<family>-canny/``: a diffusers folder (config.json + diffusion_pytorch_model.safetensors),
* ``tiny-<family>-canny-single.safetensors``: one file with diffusers' key names, as the
  ``diffusers_xl_*`` ControlNets are shared for A1111 (its config comes from the base UNet).

Each mirrors its tiny base UNet's encoder (what ``ControlNetModel.from_unet`` builds), in the
test or the demo architecture. Real ControlNets start with zero output convolutions; these
are random too, so a control image visibly changes the image and tests can tell it applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

__all__ = ["CONTROLNET_FOLDER", "TINY_CONTROLNETS", "write_tiny_controlnets", "ensure_demo_controlnets"]

CONTROLNET_FOLDER = "ControlNet"
# name -> (family, single file?)
TINY_CONTROLNETS: dict[str, tuple[str, bool]] = {
    "tiny-sd15-canny": ("sd15", False), "tiny-sd15-canny-single": ("sd15", True),
    "tiny-sdxl-canny": ("sdxl", False), "tiny-sdxl-canny-single": ("sdxl", True),
}
_MARK = "README.txt"


def _controlnet(family: str, demo: bool) -> Any:
    from diffusers import ControlNetModel

    from .tiny import _unet_sd15, _unet_sdxl

    torch.manual_seed(0)
    unet = _unet_sdxl(demo) if family == "sdxl" else _unet_sd15(4, demo)
    net = ControlNetModel.from_unet(unet)
    torch.manual_seed(1)
    with torch.no_grad():  # the zero convolutions, drawn instead (module docstring)
        for module in (*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out):
            module.weight.normal_(0.0, 0.05)
            module.bias.normal_(0.0, 0.05)
    return net


def write_tiny_controlnets(root: Path, demo: bool = False) -> list[Path]:
    """Write every tiny ControlNet under ``root/ControlNet``; returns their paths."""
    folder = Path(root) / CONTROLNET_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, (family, single) in TINY_CONTROLNETS.items():
        net = _controlnet(family, demo)
        if single:
            path = folder / f"{name}.safetensors"
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        else:
            path = folder / name
            net.save_pretrained(str(path), safe_serialization=True)
        out.append(path)
    (folder / _MARK).write_text(json.dumps({"tiny": sorted(TINY_CONTROLNETS), "demo_architecture": demo}) + "\n")
    return out


def ensure_demo_controlnets(demo_dir: Path) -> None:
    """Demo mode: the tiny ControlNets beside the demo models, in the architecture of the
    base models there (the test suite's when it points demo mode at them)."""
    from .tiny import DEMO_MARK

    base = demo_dir / "sd15" / "README.txt"
    demo = not base.exists() or DEMO_MARK in base.read_text()
    mark = demo_dir / CONTROLNET_FOLDER / _MARK
    if mark.exists() and json.loads(mark.read_text()).get("demo_architecture") == demo:
        return
    write_tiny_controlnets(demo_dir, demo)
