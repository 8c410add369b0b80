"""Demo mode's tiny models: an architecture whose cost stays small at the seeds' sizes
(1024x1024), written by the engine on first use, while the test suite's tiny models (pinned
by tests/goldens) keep theirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sdserve.engine.tiny import DEMO_MARK, write_tiny

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"


def _attention_lengths(unet, latent: int) -> list[int]:  # type: ignore[no-untyped-def]
    """The sequence length every self-attention of ``unet`` sees for a latent of side ``latent``."""
    from diffusers.models.attention_processor import Attention

    seen: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda _m, args, kw: seen.append((args or (kw["hidden_states"],))[0].shape[1]),
                                         with_kwargs=True)
             for name, m in unet.named_modules() if isinstance(m, Attention) and name.endswith("attn1")]
    cfg = unet.config
    kw = {}
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        kw["added_cond_kwargs"] = {"text_embeds": torch.zeros(1, pooled), "time_ids": torch.zeros(1, 6)}
    with torch.no_grad():
        unet(torch.zeros(1, cfg.in_channels, latent, latent), 10, torch.zeros(1, 77, cfg.cross_attention_dim), **kw)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("layout", ["sd15", "sd15-inpaint", "sdxl"])
def test_demo_unets_attend_only_at_one_eighth_of_the_latent_side(tmp_path: Path, layout: str) -> None:
    from diffusers import UNet2DConditionModel

    folder = write_tiny(tmp_path, layout, demo=True)
    unet = UNet2DConditionModel.from_pretrained(str(folder / "base" / "unet"))
    # 1024x1024 is a 128x128 latent: attention over 16x16 = 256 tokens, never 128x128 = 16384.
    lengths = _attention_lengths(unet, 128)
    assert lengths and max(lengths) == 16 * 16
    vae = json.loads((folder / "base" / "vae" / "config.json").read_text())
    assert vae["mid_block_add_attention"] is False
    assert DEMO_MARK in (folder / "README.txt").read_text()


def test_test_models_keep_attention_at_full_resolution(tiny_dir: Path) -> None:
    # The goldens pin these; the demo architecture is a separate one.
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tiny_dir / "sd15" / "base" / "unet"))
    assert max(_attention_lengths(unet, 8)) == 8 * 8


def test_serve_demo_writes_the_demo_architecture_and_replaces_an_older_demo_model(tmp_path: Path) -> None:
    from sdserve.compose import build_engine
    from sdserve.config import Settings
    from sdserve.engine.params import GenerationParams

    demo = tmp_path / "demo-models"
    old = write_tiny(demo, "sd15")  # the architecture an older sdserve wrote for demo mode ...
    readme = old / "README.txt"
    readme.write_text("\n".join(line for line in readme.read_text().splitlines() if "architecture" not in line))
    engine = build_engine(Settings(demo=True, data_dir=tmp_path, device="cpu", dtype="float32"))
    out = engine.generate(engine.prepare(GenerationParams(model=SD15, prompt="a cat", width=256, height=256,
                                                          steps=1, seed=1)))
    assert out.images[0].size == (256, 256)
    assert DEMO_MARK in readme.read_text()  # ... replaced by the demo architecture on first use
    unet = json.loads((old / "base" / "unet" / "config.json").read_text())
    assert unet["down_block_types"][-1] == "CrossAttnDownBlock2D" and len(unet["down_block_types"]) == 4
