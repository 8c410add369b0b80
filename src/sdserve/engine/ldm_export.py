"""Write a diffusers pipeline folder back out as one original-layout (LDM) checkpoint.

Most community checkpoints for SD 1.5 and SDXL ship as a single ``.safetensors`` file in the
key layout of Stability's original code (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.*`` / ``conditioner.embedders.*``), and sdserve loads those with diffusers'
single-file loader. No such file can be downloaded where sdserve is built and tested, so this
module makes one from a diffusers folder (the tiny random-weight models of ``engine.tiny``
included): it is the inverse of the key conversion that
``diffusers.loaders.single_file_utils`` applies when loading, so that loader reads the file back
into exactly the weights it was written from.

Every index is derived from the component configs (levels, layers per block, which blocks
attend), never from full-size block counts, so tiny and full-size models go through the same
code. A weight this module does not know how to place is an error rather than being dropped:
a checkpoint that silently loses a tensor would load with random weights in its place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file

__all__ = ["write_single_file"]

Tensors = dict[str, torch.Tensor]

# Prefixes of the original single-file layout, one per component.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_CLIP_PREFIX = "cond_stage_model.transformer.text_model."
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
SDXL_OPENCLIP_PREFIX = "conditioner.embedders.1.model."

# diffusers ResnetBlock2D names -> LDM ResBlock names (UNet). The LDM block is built from
# nn.Sequential containers, hence the positional indices (activations/dropout take the gaps).
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}

# Top-level UNet layers. ``add_embedding`` (SDXL's size/crop + pooled-text conditioning) and
# ``class_embedding`` (projection-type class conditioning) both live in LDM's ``label_emb``;
# a model never has both.
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}

# VAE mid-block attention: diffusers uses Linear layers where LDM's AttnBlock uses 1x1 convs.
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

_VAE_TOP = {
    "encoder.conv_in": "encoder.conv_in",
    "encoder.conv_out": "encoder.conv_out",
    "encoder.conv_norm_out": "encoder.norm_out",
    "decoder.conv_in": "decoder.conv_in",
    "decoder.conv_out": "decoder.conv_out",
    "decoder.conv_norm_out": "decoder.norm_out",
    "quant_conv": "quant_conv",
    "post_quant_conv": "post_quant_conv",
}

# CLIP encoder layer names (transformers) -> OpenCLIP resblock names. q/k/v are handled apart:
# OpenCLIP fuses them into one in_proj matrix.
_OPENCLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def write_single_file(diffusers_dir: Path, out_file: Path, arch: Literal["sd15", "sdxl"]) -> Path:
    """Convert the diffusers pipeline folder ``diffusers_dir`` into one LDM-layout checkpoint.

    Reads ``unet/``, ``vae/``, ``text_encoder/`` and, for ``arch="sdxl"``, ``text_encoder_2/``;
    writes ``out_file`` (safetensors, tensors kept in their stored dtype) and returns its path.
    """
    if arch not in ("sd15", "sdxl"):
        raise ValueError(f"unknown arch {arch!r}; expected 'sd15' or 'sdxl'")
    root = Path(diffusers_dir)
    out: Tensors = {}
    _merge(out, _unet_to_ldm(_load_weights(root / "unet"), _load_config(root / "unet")))
    _merge(out, _vae_to_ldm(_load_weights(root / "vae"), _load_config(root / "vae")))
    if arch == "sd15":
        _merge(out, _clip_to_ldm(_load_weights(root / "text_encoder"), SD15_CLIP_PREFIX))
    else:
        _merge(out, _clip_to_ldm(_load_weights(root / "text_encoder"), SDXL_CLIP_PREFIX))
        _merge(out, _openclip_to_ldm(_load_weights(root / "text_encoder_2"), _load_config(root / "text_encoder_2")))
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses views that share storage or are non-contiguous; every tensor is made
    # its own contiguous block (a no-op for the ones loaded straight from disk).
    save_file({k: v.contiguous() for k, v in out.items()}, str(out_file), metadata={"format": "pt"})
    return out_file


# --------------------------------------------------------------------------- reading


def _load_config(folder: Path) -> dict[str, Any]:
    cfg: dict[str, Any] = json.loads((folder / "config.json").read_text())
    return cfg


def _load_weights(folder: Path) -> Tensors:
    """A component's state dict from its safetensors file(s): single, sharded, or one variant."""
    if not folder.is_dir():
        raise FileNotFoundError(f"missing component folder {folder}")
    for stem in ("diffusion_pytorch_model", "model"):
        single = folder / f"{stem}.safetensors"
        if single.is_file():
            return load_file(str(single))
        index = folder / f"{stem}.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            merged: Tensors = {}
            for shard in shards:
                merged.update(load_file(str(folder / shard)))
            return merged
    # A folder holding only a variant (e.g. ``*.fp16.safetensors``): take it if it is the only one,
    # since picking between several variants would be a guess.
    candidates = sorted(folder.glob("*.safetensors"))
    if len(candidates) == 1:
        return load_file(str(candidates[0]))
    raise FileNotFoundError(f"no unambiguous safetensors weights in {folder}")


def _merge(into: Tensors, part: Tensors) -> None:
    clash = into.keys() & part.keys()
    if clash:
        raise ValueError(f"two weights map to the same checkpoint key: {sorted(clash)[:5]}")
    into.update(part)


def _convert(sd: Tensors, rename: Callable[[str], str | None], what: str) -> Tensors:
    """Apply ``rename`` to every key; a key it cannot place (None) is an error, not a drop."""
    out: Tensors = {}
    unknown: list[str] = []
    for key, value in sd.items():
        new = rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"{what}: no LDM name for {len(unknown)} weight(s), e.g. {unknown[:5]}")
    return out


# --------------------------------------------------------------------------- UNet


def _unet_to_ldm(sd: Tensors, cfg: dict[str, Any]) -> Tensors:
    layers = cfg["layers_per_block"]
    if not isinstance(layers, int):
        # LDM's input/output block numbering (and diffusers' loader) assume one count for all levels.
        raise ValueError("per-level layers_per_block has no single-file layout")
    if cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise ValueError(f"mid block {cfg.get('mid_block_type')!r} has no single-file layout")
    n_levels = len(cfg["block_out_channels"])
    up_attends = ["CrossAttn" in t for t in cfg["up_block_types"]]
    # LDM numbers the UNet as flat lists: input_blocks.0 is conv_in, then per level `layers`
    # (resnet[, attention]) entries plus one downsampler entry (none after the last level).
    # The decoder side has `layers + 1` entries per level, the last one also carrying the
    # upsampler after the resnet (and after the attention, when the level has one).
    per_level = layers + 1

    def rename(key: str) -> str | None:
        module, _, param = key.rpartition(".")
        if module in _UNET_TOP:
            return f"{UNET_PREFIX}{_UNET_TOP[module]}.{param}"
        parts = key.split(".")
        if parts[0] == "down_blocks":
            level, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":  # down_blocks.L.downsamplers.0.conv.<p>
                return f"{UNET_PREFIX}input_blocks.{1 + level * per_level + layers}.0.op.{parts[-1]}"
            idx = 1 + level * per_level + int(parts[3])
            return _unet_block(idx, "input_blocks", kind, parts[4:])
        if parts[0] == "up_blocks":
            level, kind = int(parts[1]), parts[2]
            if level >= n_levels:
                return None
            if kind == "upsamplers":  # up_blocks.L.upsamplers.0.conv.<p>
                slot = 2 if up_attends[level] else 1
                return f"{UNET_PREFIX}output_blocks.{level * per_level + layers}.{slot}.conv.{parts[-1]}"
            idx = level * per_level + int(parts[3])
            return _unet_block(idx, "output_blocks", kind, parts[4:])
        if parts[0] == "mid_block":
            # middle_block is resnet, attention, resnet: diffusers' loader only knows that shape.
            kind, i = parts[1], int(parts[2])
            if kind == "resnets" and i in (0, 1):
                return _unet_resnet(f"{UNET_PREFIX}middle_block.{2 * i}", parts[3:])
            if kind == "attentions" and i == 0:
                return f"{UNET_PREFIX}middle_block.1.{'.'.join(parts[3:])}"
        return None

    return _convert(sd, rename, "unet")


def _unet_block(idx: int, blocks: str, kind: str, rest: list[str]) -> str | None:
    # Inside one LDM block entry, slot 0 is the ResBlock and slot 1 the SpatialTransformer,
    # whose inner names (norm, proj_in, transformer_blocks.*, proj_out) equal diffusers' own.
    if kind == "resnets":
        return _unet_resnet(f"{UNET_PREFIX}{blocks}.{idx}.0", rest)
    if kind == "attentions":
        return f"{UNET_PREFIX}{blocks}.{idx}.1.{'.'.join(rest)}"
    return None


def _unet_resnet(base: str, rest: list[str]) -> str | None:
    module, param = ".".join(rest[:-1]), rest[-1]
    if module not in _UNET_RESNET:
        return None
    return f"{base}.{_UNET_RESNET[module]}.{param}"


# --------------------------------------------------------------------------- VAE


def _vae_to_ldm(sd: Tensors, cfg: dict[str, Any]) -> Tensors:
    n_up = len(cfg["up_block_types"])

    def rename(key: str) -> str | None:
        module, _, param = key.rpartition(".")
        if module in _VAE_TOP:
            return f"{VAE_PREFIX}{_VAE_TOP[module]}.{param}"
        parts = key.split(".")
        side = parts[0]  # encoder / decoder
        if side not in ("encoder", "decoder") or len(parts) < 5:
            return None
        if parts[1] == "down_blocks" and side == "encoder":
            level = int(parts[2])
            if parts[3] == "downsamplers":
                return f"{VAE_PREFIX}encoder.down.{level}.downsample.conv.{param}"
            if parts[3] == "resnets":
                return _vae_resnet(f"encoder.down.{level}.block.{parts[4]}", parts[5:])
        if parts[1] == "up_blocks" and side == "decoder":
            # LDM's decoder indexes ``up`` from the lowest resolution's *opposite* end:
            # up.0 is the last block applied, diffusers' up_blocks.0 the first.
            level = n_up - 1 - int(parts[2])
            if parts[3] == "upsamplers":
                return f"{VAE_PREFIX}decoder.up.{level}.upsample.conv.{param}"
            if parts[3] == "resnets":
                return _vae_resnet(f"decoder.up.{level}.block.{parts[4]}", parts[5:])
        if parts[1] == "mid_block":
            i = int(parts[3])
            if parts[2] == "resnets":  # LDM counts the two mid resnets from 1
                return _vae_resnet(f"{side}.mid.block_{i + 1}", parts[4:])
            if parts[2] == "attentions" and i == 0:
                attn_module = ".".join(parts[4:-1])
                if attn_module in _VAE_ATTN:
                    return f"{VAE_PREFIX}{side}.mid.attn_1.{_VAE_ATTN[attn_module]}.{param}"
        return None

    out = _convert(sd, rename, "vae")
    # The original checkpoints store the attention projections as 1x1 conv kernels; keep that
    # shape so other LDM tooling reads the file too (diffusers squeezes either form).
    for key, value in out.items():
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            out[key] = value[:, :, None, None]
    return out


def _vae_resnet(base: str, rest: list[str]) -> str | None:
    if len(rest) != 2 or rest[0] not in ("norm1", "conv1", "norm2", "conv2", "conv_shortcut"):
        return None
    name = "nin_shortcut" if rest[0] == "conv_shortcut" else rest[0]
    return f"{VAE_PREFIX}{base}.{name}.{rest[1]}"


# --------------------------------------------------------------------------- text encoders


def _strip_text_model(key: str) -> str:
    # transformers >= 5.6 saves CLIPTextModel without its ``text_model.`` wrapper while
    # CLIPTextModelWithProjection keeps it; older saves have it on both. Normalise to bare names.
    return key.removeprefix("text_model.")


def _clip_to_ldm(sd: Tensors, prefix: str) -> Tensors:
    """OpenAI CLIP text encoder: the LDM file holds the transformers model itself, prefixed."""

    def rename(key: str) -> str | None:
        bare = _strip_text_model(key)
        if bare.startswith(("embeddings.", "encoder.", "final_layer_norm.")):
            return prefix + bare
        return None

    # position_ids is a buffer; the loader rebuilds it, and it is not persisted by new saves.
    return _convert({k: v for k, v in sd.items() if not k.endswith("position_ids")}, rename, "text_encoder")


def _openclip_to_ldm(sd: Tensors, cfg: dict[str, Any]) -> Tensors:
    """SDXL's second encoder in OpenCLIP's own layout (fused qkv, transposed text_projection)."""
    p = SDXL_OPENCLIP_PREFIX
    bare = {_strip_text_model(k): v for k, v in sd.items() if not k.endswith("position_ids")}
    out: Tensors = {}
    fixed = {
        "embeddings.token_embedding.weight": "token_embedding.weight",
        "embeddings.position_embedding.weight": "positional_embedding",
        "final_layer_norm.weight": "ln_final.weight",
        "final_layer_norm.bias": "ln_final.bias",
    }
    for src, dst in fixed.items():
        out[p + dst] = bare.pop(src)
    # OpenCLIP applies ``x @ text_projection``; a torch Linear stores the transpose.
    out[p + "text_projection"] = bare.pop("text_projection.weight").T
    for i in range(cfg["num_hidden_layers"]):
        src = f"encoder.layers.{i}."
        dst = f"{p}transformer.resblocks.{i}."
        # nn.MultiheadAttention keeps q, k, v stacked in that order along the output dimension.
        for param in ("weight", "bias"):
            qkv = [bare.pop(f"{src}self_attn.{n}_proj.{param}") for n in ("q", "k", "v")]
            out[f"{dst}attn.in_proj_{param}"] = torch.cat(qkv, dim=0)
        for hf_name, oc_name in _OPENCLIP_LAYER.items():
            for param in ("weight", "bias"):
                out[f"{dst}{oc_name}.{param}"] = bare.pop(f"{src}{hf_name}.{param}")
    if bare:
        raise ValueError(f"text_encoder_2: no LDM name for {len(bare)} weight(s), e.g. {sorted(bare)[:5]}")
    return out
