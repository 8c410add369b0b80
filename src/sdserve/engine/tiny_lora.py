"""Tiny random-weight add-ons in the real file formats, for the tiny models (tests, demo mode).

Written next to the tiny model folders in A1111's layout (``models/Lora``, ``models/embeddings``),
so ``<lora:tiny_detail:0.8>`` and the embedding names work on ``sdserve serve --demo``:

* ``Lora/tiny_detail.safetensors`` (SD 1.5) and ``Lora/tiny_detail_xl.safetensors`` (SDXL):
  kohya/A1111 format (``lora_unet_*`` / ``lora_te_*`` or ``lora_te1_*``/``lora_te2_*`` keys with
  ``.lora_down.weight``, ``.lora_up.weight`` and ``.alpha``), rank 4, over every attention
  projection of the UNet and the text encoders. The UNet keys use diffusers' module names
  (as kohya's SD 1.5 files and diffusers' own kohya export do).
* ``embeddings/tiny_style.pt`` (SD 1.5, A1111's pickled form: ``string_to_param``, 2 vectors) and
  ``embeddings/tiny_style_xl.safetensors`` (SDXL: ``clip_l`` and ``clip_g``, 2 vectors each).

Shapes are read from the model's own weight files, so the add-ons fit exactly the models they
are written for; weights come from a fixed seed. The deltas are large enough to change an image.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["write_tiny_addons", "write_lora", "TINY_LORAS", "TINY_EMBEDDINGS"]

# Add-on stem -> the tiny layout it is made for.
TINY_LORAS = {"tiny_detail": "sd15", "tiny_detail_xl": "sdxl"}
TINY_EMBEDDINGS = {"tiny_style": "sd15", "tiny_style_xl": "sdxl"}
_RANK = 4
_UNET_TARGETS = (".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight")
_TE_TARGETS = (".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".out_proj.weight")


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _lora_pairs(prefix: str, shapes: dict[str, tuple[int, ...]], targets: tuple[str, ...],
                g: torch.Generator, rank: int, std: float) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, shape in sorted(shapes.items()):
        if not key.endswith(targets) or len(shape) != 2:
            continue
        # Kohya names text-encoder modules from transformers' CLIPTextModel ("text_model.");
        # newer transformers save the encoder's weights without that prefix.
        if prefix.startswith("lora_te") and not key.startswith("text_model."):
            key = f"text_model.{key}"
        module = key.removesuffix(".weight").replace(".", "_")
        out_f, in_f = shape
        out[f"{prefix}_{module}.lora_down.weight"] = torch.randn(rank, in_f, generator=g) * std
        out[f"{prefix}_{module}.lora_up.weight"] = torch.randn(out_f, rank, generator=g) * std
        out[f"{prefix}_{module}.alpha"] = torch.tensor(float(rank))
    return out


def write_lora(base: Path, sdxl: bool, dest: Path, rank: int = _RANK, seed: int = 7,
               std: float = 0.5) -> None:
    """A random kohya-format LoRA of ``rank`` for the diffusers model folder ``base`` (any
    size: the bench writes full-size ones) at ``dest``."""
    g = torch.Generator().manual_seed(seed)
    sd = _lora_pairs("lora_unet", _shapes(base / "unet" / "diffusion_pytorch_model.safetensors"), _UNET_TARGETS, g,
                     rank, std)
    encoders = (("lora_te1", "text_encoder"), ("lora_te2", "text_encoder_2")) if sdxl else (("lora_te", "text_encoder"),)
    for prefix, folder in encoders:
        sd.update(_lora_pairs(prefix, _shapes(base / folder / "model.safetensors"), _TE_TARGETS, g, rank, std))
    save_file(sd, str(dest), metadata={"ss_base_model_version": "sdxl_base_v1-0" if sdxl else "sd_v1",
                                       "ss_network_module": "networks.lora", "ss_network_dim": str(rank)})


def _token_width(base: Path, folder: str) -> int:
    shapes = _shapes(base / folder / "model.safetensors")
    key = next(k for k in shapes if k.endswith("embeddings.token_embedding.weight"))
    return shapes[key][1]


def _write_embedding(base: Path, sdxl: bool, dest: Path, name: str) -> None:
    g = torch.Generator().manual_seed(11)
    if sdxl:
        save_file({"clip_l": torch.randn(2, _token_width(base, "text_encoder"), generator=g),
                   "clip_g": torch.randn(2, _token_width(base, "text_encoder_2"), generator=g)}, str(dest))
        return
    vectors = torch.randn(2, _token_width(base, "text_encoder"), generator=g)
    # A1111's own .pt layout (what its Train tab writes).
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": name, "step": 0,
                "sd_checkpoint": None, "sd_checkpoint_name": None}, str(dest))


def write_tiny_addons(tiny_root: Path, lora_dir: Path, embedding_dir: Path) -> list[Path]:
    """Write the tiny LoRAs and embeddings for the tiny models under ``tiny_root`` (those whose
    layout is there) into ``lora_dir`` and ``embedding_dir``; kept when already there."""
    written = []
    for kind, folder, table in (("Lora", Path(lora_dir), TINY_LORAS),
                                ("embeddings", Path(embedding_dir), TINY_EMBEDDINGS)):
        for stem, layout in table.items():
            base = Path(tiny_root) / layout / "base"
            sdxl = layout.startswith("sdxl")
            dest = folder / (f"{stem}.pt" if kind == "embeddings" and not sdxl else f"{stem}.safetensors")
            if not (base / "unet").is_dir():
                continue
            if not dest.exists():
                folder.mkdir(parents=True, exist_ok=True)
                if kind == "Lora":
                    write_lora(base, sdxl, dest)
                else:
                    _write_embedding(base, sdxl, dest, stem)
            written.append(dest)
    return written
