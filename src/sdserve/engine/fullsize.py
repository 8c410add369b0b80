"""Full-size SD 1.5 and SDXL architectures with random weights, written in the diffusers
layout, so benchmarks do realistic compute without downloading any weights.

The configs are those of the published models (UNet, VAE, CLIP text encoders); only the
tokenizer is the tiny byte-level one from ``tiny.py`` (token ids index the full-size
embedding table, so compute is unchanged). Images are noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .tiny import write_tokenizer

__all__ = ["write_full_size", "FULL_SIZE_ARCHES"]

FULL_SIZE_ARCHES = ("sd15", "sdxl")
_VOCAB = 49408
_SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
              steps_offset=1)


def _clip(hidden: int, layers: int, heads: int, projection: bool, act: str) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=_VOCAB, hidden_size=hidden, intermediate_size=hidden * 4,
                         num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                         projection_dim=hidden if projection else 768, hidden_act=act,
                         bos_token_id=_VOCAB - 2, eos_token_id=_VOCAB - 1, pad_token_id=_VOCAB - 1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _vae(scaling: float) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                         sample_size=512, scaling_factor=scaling)


def _build(arch: str) -> Any:
    import diffusers as d

    if arch == "sd15":
        unet = d.UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                      block_out_channels=(320, 640, 1280, 1280), layers_per_block=2)
        return d.StableDiffusionPipeline(
            vae=_vae(0.18215), text_encoder=_clip(768, 12, 12, False, "quick_gelu"), tokenizer=None,
            unet=unet, scheduler=d.PNDMScheduler(**_SCHED, skip_prk_steps=True),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    unet = d.UNet2DConditionModel(
        sample_size=128, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    return d.StableDiffusionXLPipeline(
        vae=_vae(0.13025), text_encoder=_clip(768, 12, 12, False, "quick_gelu"),
        text_encoder_2=_clip(1280, 32, 20, True, "gelu"), tokenizer=None, tokenizer_2=None, unet=unet,
        scheduler=d.EulerDiscreteScheduler(**_SCHED, timestep_spacing="leading"))


def write_full_size(root: Path, arch: str) -> Path:
    """Write (once) a full-size random-weight ``arch`` pipeline under ``root/arch``; returns it."""
    if arch not in FULL_SIZE_ARCHES:
        raise ValueError(f"arch must be one of {FULL_SIZE_ARCHES}, not {arch!r}")
    out = Path(root) / arch
    if (out / "model_index.json").exists():
        return out
    torch.manual_seed(0)
    pipe = _build(arch)
    pipe.to(torch.float16)  # halves the disk; loaders cast to the dtype they run in
    pipe.save_pretrained(str(out), safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        if arch == "sdxl" or name == "tokenizer":
            write_tokenizer(out / name, pad_token="!" if name == "tokenizer_2" else "<|endoftext|>")
    _fix_index(out, arch)
    return out


def _fix_index(out: Path, arch: str) -> None:
    # The pipeline was saved without tokenizer objects; point model_index at the files written.
    import json

    idx = json.loads((out / "model_index.json").read_text())
    idx["tokenizer"] = ["transformers", "CLIPTokenizer"]
    if arch == "sdxl":
        idx["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    (out / "model_index.json").write_text(json.dumps(idx, indent=2))
