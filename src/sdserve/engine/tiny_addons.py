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

__all__ = ["CONTROLNET_FOLDER", "IP_ADAPTER_FOLDER", "TINY_CONTROLNETS", "TINY_IP_ADAPTERS", "write_tiny_controlnets",
           "write_tiny_ip_adapters", "ensure_demo_controlnets"]

CONTROLNET_FOLDER = "ControlNet"
# name -> (family, single file?)
TINY_CONTROLNETS: dict[str, tuple[str, bool]] = {
    "tiny-sd15-canny": ("sd15", False), "tiny-sd15-canny-single": ("sd15", True),
    "tiny-sdxl-canny": ("sdxl", False), "tiny-sdxl-canny-single": ("sdxl", True),
}
_MARK = "README.txt"
IP_ADAPTER_FOLDER = "ipadapter"
# name -> (family, path below ipadapter/): SD 1.5's beside image_encoder/, SDXL's in sdxl_models/
# with its own, as in h94/IP-Adapter.
TINY_IP_ADAPTERS: dict[str, tuple[str, str]] = {
    "tiny-ip-adapter_sd15": ("sd15", "tiny-ip-adapter_sd15.safetensors"),
    "tiny-ip-adapter_sdxl": ("sdxl", "sdxl_models/tiny-ip-adapter_sdxl.safetensors"),
}
_IMAGE_EMBED = 16  # the tiny image encoder's projection width


def _controlnet(family: str, demo: bool) -> Any:
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    unet = _unet_of(family, demo)
    net = ControlNetModel.from_unet(unet)
    torch.manual_seed(1)
    with torch.no_grad():  # the zero convolutions, drawn instead (module docstring)
        for module in (*net.controlnet_down_blocks, net.controlnet_mid_block):
            module.weight.normal_(0.0, 0.05)
            module.bias.normal_(0.0, 0.05)
        # The hint encoder He-initialised: PyTorch's default init shrinks the signal at each
        # of its eight convolutions, so the hint's content would barely reach the image.
        emb = net.controlnet_cond_embedding
        for conv in (emb.conv_in, *emb.blocks, emb.conv_out):
            gain = 4.0 if conv is emb.conv_out else 1.0  # about as strong as the latent's conv_in
            conv.weight.normal_(0.0, gain * (2.0 / conv.weight[0].numel()) ** 0.5)
            conv.bias.zero_()
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


def _unet_of(family: str, demo: bool) -> Any:
    from .tiny import _unet_sd15, _unet_sdxl

    return _unet_sdxl(demo) if family == "sdxl" else _unet_sd15(4, demo)


def _image_encoder() -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    # 224-px input (what diffusers' default CLIP processor makes), 7x7 patches of a narrow ViT.
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=224,
        patch_size=32, projection_dim=_IMAGE_EMBED, hidden_act="quick_gelu"))


def write_tiny_ip_adapters(root: Path, demo: bool = False) -> list[Path]:
    """Write the tiny IP-Adapters (the original single-file layout: ``image_proj.*`` and
    ``ip_adapter.<n>.to_k_ip/to_v_ip`` for each cross-attention layer) and their encoders."""
    out = []
    for name, (family, rel) in TINY_IP_ADAPTERS.items():
        torch.manual_seed(2)
        path = Path(root) / IP_ADAPTER_FOLDER / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _image_encoder().save_pretrained(str(path.parent / "image_encoder"), safe_serialization=True)
        unet = _unet_of(family, demo)
        cross = unet.config.cross_attention_dim
        tokens = 4  # image tokens the projection makes (diffusers reads it from the shape)
        sd = {"image_proj.proj.weight": torch.randn(cross * tokens, _IMAGE_EMBED) * 0.2,
              "image_proj.proj.bias": torch.zeros(cross * tokens),
              "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
        key_id = 1  # diffusers numbers every attention processor; cross-attention ones are odd
        for proc_name, _ in unet.attn_processors.items():
            if proc_name.endswith("attn1.processor"):
                continue
            hidden = unet.get_submodule(proc_name.removesuffix(".processor")).to_q.out_features
            for kind in ("to_k_ip", "to_v_ip"):
                sd[f"ip_adapter.{key_id}.{kind}.weight"] = torch.randn(hidden, cross) * 0.3
            key_id += 2
        save_file(sd, str(path))
        out.append(path)
    return out


def ensure_demo_controlnets(demo_dir: Path) -> None:
    """Demo mode: the tiny ControlNets and IP-Adapters beside the demo models, in the
    architecture of the base models there (the test suite's when it points demo mode at them).

    Written in a scratch folder and renamed into place, so a server reading the folders (or
    another one writing them) never sees half a file.
    """
    import os
    import shutil

    from .tiny import DEMO_MARK

    base = demo_dir / "sd15" / "README.txt"
    demo = not base.exists() or DEMO_MARK in base.read_text()
    mark = demo_dir / CONTROLNET_FOLDER / _MARK
    if mark.exists() and json.loads(mark.read_text()).get("demo_architecture") == demo:
        return
    scratch = demo_dir / f".addons-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    write_tiny_ip_adapters(scratch, demo)
    write_tiny_controlnets(scratch, demo)
    for folder in (IP_ADAPTER_FOLDER, CONTROLNET_FOLDER):  # the one with the mark last
        shutil.rmtree(demo_dir / folder, ignore_errors=True)
        try:
            os.rename(scratch / folder, demo_dir / folder)
        except OSError:  # another process put its (identical) copy there first
            pass
    shutil.rmtree(scratch, ignore_errors=True)
