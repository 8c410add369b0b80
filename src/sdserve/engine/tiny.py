"""Tiny random-weight models in exactly the on-disk layouts of the real repos.

No weights can be downloaded where sdserve is built and tested, so the real loading code
is exercised on these: ``sdserve make-tiny DIR`` writes one folder per family, and demo mode
serves them. Weights are drawn from a fixed seed, so the same torch version writes the same
bytes and golden images stay stable. Outputs are noise: the weights are random.

Layout written for each family (``DIR/<layout>/``):

* ``base/``: a diffusers folder as on the hub (model_index.json, unet/, vae/, text_encoder/,
  tokenizer/, scheduler/; SDXL adds text_encoder_2/ and tokenizer_2/).
* sdxl-refiner: the refiner's folder (text_encoder_2/ and tokenizer_2/ only, an img2img
  pipeline's model_index.json with requires_aesthetics_score).
* sdxl-lightning additionally ``sdxl_lightning_4step_unet.safetensors``: a bare UNet state
  dict, as ByteDance/SDXL-Lightning ships it.

Two architectures per family, same layouts and pipeline classes:

* the test models (``demo=False``, what ``make-tiny`` and the test suite write): attention at
  the full latent resolution, so every block type runs even on 64-pixel images. Their
  golden pixels are pinned in tests/goldens, so they must not change.
* the demo models (``demo=True``, what ``sdserve serve --demo`` writes): attention only at
  1/8 of the latent side, narrow full-resolution layers, no VAE mid-block attention. At
  1024x1024 (a 128x128 latent) full-resolution self-attention alone is 16384² scores per
  head per step (minutes on a laptop CPU); at 16x16 it is 256², and an image takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from .catalog import DEMO_LAYOUTS

if TYPE_CHECKING:  # imported where used: writing models is the only job that needs them
    from diffusers import AutoencoderKL, DiffusionPipeline, SchedulerMixin, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

__all__ = ["write_tiny", "write_all_tiny", "write_tokenizer", "LIGHTNING_UNET_FILE", "DEMO_MARK"]

LIGHTNING_UNET_FILE = "sdxl_lightning_4step_unet.safetensors"
# README.txt line of a folder written with the demo architecture.
DEMO_MARK = "Demo architecture (fast at large sizes)."
_HIDDEN = 32  # text encoder width; SDXL's UNet cross-attends to both encoders concatenated
# SDXL's second encoder is wider than the first (1280 vs 768): single-file loading tells the
# two apart by width, so the tiny ones must differ too.
_HIDDEN_2 = 48


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level BPE alphabet: printable bytes map to themselves, the rest are
    # shifted above 255 so every byte has a visible, non-whitespace character.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def write_tokenizer(folder: Path, pad_token: str = "<|endoftext|>") -> int:
    """Write a CLIP BPE tokenizer (vocab.json, merges.txt, ...) as the real repos ship it.

    The vocabulary is byte-level with no merges: every byte (and its end-of-word form) is a
    token, so any prompt tokenises and long prompts hit the real 77-token limit exactly as
    with the full vocabulary. Returns the vocabulary size.
    """
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # highest id: CLIP pools at argmax(input_ids)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad_token}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
         "errors": "replace", "add_prefix_space": False, "clean_up_tokenization_spaces": True}, indent=2))
    return len(vocab)


def _text_encoder(vocab_size: int, with_projection: bool,
                  hidden: int = _HIDDEN) -> CLIPTextModel | CLIPTextModelWithProjection:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=hidden,
        hidden_act="quick_gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModelWithProjection(cfg) if with_projection else CLIPTextModel(cfg)


def _vae(scaling_factor: float, demo: bool = False) -> AutoencoderKL:
    from diffusers import AutoencoderKL

    # Four blocks, like the real VAE, so the latent is 1/8 of the image on each side.
    if demo:
        # Narrow at full resolution, and no attention over the whole latent in the mid block.
        # sample_size is the tile side when large images decode in tiles.
        shape: dict[str, Any] = dict(block_out_channels=(4, 4, 8, 8), norm_num_groups=4, sample_size=512,
                                     mid_block_add_attention=False)
    else:
        shape = dict(block_out_channels=(8, 16, 16, 16), norm_num_groups=8, sample_size=64)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        scaling_factor=scaling_factor,
        **shape,
    )


def _unet_sd15(in_channels: int, demo: bool = False) -> UNet2DConditionModel:
    from diffusers import UNet2DConditionModel

    if demo:
        # Three plain blocks halve the latent side three times before the one attention block.
        return UNet2DConditionModel(
            sample_size=32,
            in_channels=in_channels,
            out_channels=4,
            down_block_types=("DownBlock2D",) * 3 + ("CrossAttnDownBlock2D",),
            up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * 3,
            block_out_channels=(8, 16, 16, 32),
            layers_per_block=1,
            cross_attention_dim=_HIDDEN,
            # diffusers reads this as the number of heads: one head of 32 channels (torch's CPU
            # attention kernel is slow per score, and 8 heads of 4 make 8x the scores).
            attention_head_dim=1,
            norm_num_groups=8,
        )
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=_HIDDEN,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def _unet_sdxl(demo: bool = False, refiner: bool = False) -> UNet2DConditionModel:
    """SDXL's UNet; ``refiner``: the refiner's, which cross-attends to the second encoder only
    and is conditioned on 5 numbers (size, crop, aesthetic score) instead of 6."""
    from diffusers import UNet2DConditionModel

    time_dim = 8
    shape: dict[str, Any]
    if demo:
        # As SDXL itself: plain first block(s), attention only further down (here at 1/8 side).
        shape = dict(
            sample_size=32,
            down_block_types=("DownBlock2D",) * 3 + ("CrossAttnDownBlock2D",),
            up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * 3,
            block_out_channels=(8, 16, 16, 32),
            attention_head_dim=1,  # one head (see _unet_sd15)
            transformer_layers_per_block=(1, 1, 1, 2),
            norm_num_groups=8,
        )
    else:
        shape = dict(
            sample_size=16,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 64),
            attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 2),
            norm_num_groups=32,
        )
    return UNet2DConditionModel(
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        # SDXL conditions on 6 size/crop numbers plus the pooled text embedding of encoder 2.
        projection_class_embeddings_input_dim=time_dim * (5 if refiner else 6) + _HIDDEN_2,
        cross_attention_dim=_HIDDEN_2 if refiner else _HIDDEN + _HIDDEN_2,
        **shape,
    )


def _sd15_pipe(layout: str, demo: bool) -> dict[str, Any]:
    """The StableDiffusionPipeline components of ``layout`` but its text encoder and tokenizer."""
    from diffusers import LCMScheduler, PNDMScheduler
    from transformers import CLIPTokenizer

    sched_kw = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    scheduler: SchedulerMixin
    if layout == "lcm":
        scheduler = LCMScheduler(**sched_kw, timestep_spacing="leading", set_alpha_to_one=True, steps_offset=1)
    else:
        scheduler = PNDMScheduler(**sched_kw, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    return dict(
        unet=_unet_sd15(9 if layout == "sd15-inpaint" else 4, demo),
        vae=_vae(0.18215, demo),
        text_encoder=None,
        tokenizer=CLIPTokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _sdxl_scheduler() -> SchedulerMixin:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")


def _sdxl_refiner_pipe(cls: Any, tok_dir: Path, vocab_size: int, demo: bool) -> DiffusionPipeline:
    """The SDXL refiner's layout (stabilityai/stable-diffusion-xl-refiner-1.0): no first text
    encoder or tokenizer (model_index lists them as null), the second encoder, SDXL's VAE, a
    UNet on the aesthetic-score conditioning, and an empty negative prompt encoded as text."""
    from transformers import CLIPTokenizer

    write_tokenizer(tok_dir / "2", pad_token="!")
    torch.manual_seed(2)  # its own weights, as the real refiner's UNet is its own
    return cls(
        vae=_vae(0.13025, demo),
        text_encoder=None,
        text_encoder_2=_text_encoder(vocab_size, with_projection=True, hidden=_HIDDEN_2),
        tokenizer=None,
        tokenizer_2=CLIPTokenizer.from_pretrained(str(tok_dir / "2")),
        unet=_unet_sdxl(demo, refiner=True),
        scheduler=_sdxl_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )


def write_tiny(root: Path, layout: str, demo: bool = False) -> Path:
    """Write one tiny model family under ``root/layout``; returns that folder. ``demo``: the
    architecture that stays fast at large sizes (module docstring)."""
    from diffusers import (EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline,
                           StableDiffusionXLPipeline)
    from transformers import CLIPTokenizer

    if layout not in DEMO_LAYOUTS:
        raise ValueError(f"unknown tiny layout {layout!r}; choose from {', '.join(DEMO_LAYOUTS)}")
    out = Path(root) / layout
    base = out / "base"
    tok_dir = out / "_tok"
    torch.manual_seed(0)
    vocab_size = write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    pipe: DiffusionPipeline
    if layout == "sdxl-refiner":
        pipe = _sdxl_refiner_pipe(StableDiffusionXLImg2ImgPipeline, tok_dir, vocab_size, demo)
    elif layout.startswith("sdxl"):
        write_tokenizer(tok_dir / "2", pad_token="!")
        pipe = StableDiffusionXLPipeline(
            vae=_vae(0.13025, demo),
            text_encoder=_text_encoder(vocab_size, with_projection=False),
            text_encoder_2=_text_encoder(vocab_size, with_projection=True, hidden=_HIDDEN_2),
            tokenizer=tokenizer,
            tokenizer_2=CLIPTokenizer.from_pretrained(str(tok_dir / "2")),
            unet=_unet_sdxl(demo),
            scheduler=_sdxl_scheduler(),
            force_zeros_for_empty_prompt=True,
        )
    else:
        kw = _sd15_pipe(layout, demo)
        kw["text_encoder"] = _text_encoder(vocab_size, with_projection=False)
        kw["tokenizer"] = tokenizer
        pipe = StableDiffusionPipeline(**kw)
    pipe.save_pretrained(str(base), safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        if (base / name).is_dir():
            for f in (base / name).iterdir():
                f.unlink()
            write_tokenizer(base / name, pad_token="!" if name == "tokenizer_2" else "<|endoftext|>")
    if layout == "sdxl-lightning":
        torch.manual_seed(1)  # a different UNet from the base, as the real distilled one is
        save_file(_unet_sdxl(demo).state_dict(), str(out / LIGHTNING_UNET_FILE))
    for p in sorted(tok_dir.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    tok_dir.rmdir()
    (out / "README.txt").write_text(
        f"Tiny random-weight '{layout}' model written by sdserve make-tiny.\n"
        "Real on-disk layout, random weights: its images are noise.\n"
        f"{DEMO_MARK if demo else 'Test architecture.'}\n"
    )
    return out


def write_all_tiny(root: Path, layouts: tuple[str, ...] = DEMO_LAYOUTS, force: bool = False,
                   demo: bool = False) -> list[Path]:
    """Write every tiny family under ``root``; existing complete folders are kept unless ``force``."""
    done = []
    for layout in layouts:
        marker = Path(root) / layout / "README.txt"
        if marker.exists() and not force:
            done.append(marker.parent)
            continue
        done.append(write_tiny(Path(root), layout, demo))
    return done
