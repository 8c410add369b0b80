"""A VAE from the add-on folder per request: the same pixels as diffusers' pipeline with that
VAE passed in, in both on-disk forms; other requests keep the model's own; a VAE of another
latent space is a 4xx naming the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdserve.engine.params import BatchItem, GenerationParams
from sdserve.errors import BadInput

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
BASE = {"width": 64, "height": 64, "steps": 2, "seed": 9, "guidance": 7.0, "scheduler": "euler"}


def _params(model: str = SD15, **extra) -> GenerationParams:  # type: ignore[no-untyped-def]
    return GenerationParams(model=model, prompt="a lighthouse", negative_prompt="fog", **{**BASE, **extra})


def _pixels(engine, **extra) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(engine.generate(_params(**extra)).images[0], dtype=np.int16)


def test_override_vae_matches_diffusers_with_that_vae(engine, tiny_dir):
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    from sdserve.engine.pipelines import make_scheduler

    folder = engine.addons.find("vae", "tiny-vae-diffusers", field="vae").path
    vae = AutoencoderKL.from_pretrained(str(folder), local_files_only=True)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_dir / "sd15" / "base"), vae=vae, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    with torch.inference_mode():
        ref = pipe(prompt=["a lighthouse"], negative_prompt=["fog"], num_inference_steps=2, guidance_scale=7.0,
                   width=64, height=64, generator=[torch.Generator("cpu").manual_seed(9)]).images[0]
    ref_px = np.asarray(ref, dtype=np.int16)
    own = _pixels(engine)
    for name in ("tiny-vae", "tiny-vae.safetensors", "tiny-vae-diffusers"):  # LDM single file, diffusers folder
        assert np.abs(_pixels(engine, vae=name) - ref_px).max() <= 1, name
    assert np.abs(own - ref_px).max() > 10  # the model's own VAE decodes otherwise
    assert np.array_equal(own, _pixels(engine))  # and is untouched by the override


def test_a_batch_keeps_each_loops_vae(engine):
    alone_own, alone_vae = _pixels(engine, seed=11), _pixels(engine, seed=12, vae="tiny-vae")
    out = engine.generate_batch([BatchItem(_params(seed=11)), BatchItem(_params(seed=12, vae="tiny-vae"))])
    assert np.abs(np.asarray(out[0].images[0], dtype=np.int16) - alone_own).max() <= 2
    assert np.abs(np.asarray(out[1].images[0], dtype=np.int16) - alone_vae).max() <= 2


def test_sdxl_takes_the_same_latent_space_vae(engine):
    # SD 1.5 and SDXL VAEs share their shape (as the real ones do): A1111 lets either decode.
    assert not np.array_equal(_pixels(engine, model=SDXL), _pixels(engine, model=SDXL, vae="tiny-vae"))


def test_unknown_and_wrong_family_vaes_are_refused_naming_the_field(engine):
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    with pytest.raises(BadInput) as e:
        engine.prepare(_params(vae="tiny-vea"))
    assert e.value.field == "vae" and "tiny-vae" in e.value.detail  # a close match is offered
    with pytest.raises(BadInput) as e:
        engine.prepare(_params(vae="../sd15/base/vae"))
    assert e.value.field == "vae"
    home = engine.addons.home("vae")
    wide = AutoencoderKL(latent_channels=16, block_out_channels=(8, 8), norm_num_groups=8,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    save_file(wide.state_dict(), str(home / "flux-like.safetensors"))
    (home / "broken.safetensors").write_bytes(b"not a safetensors file")
    for name in ("flux-like", "broken"):
        with pytest.raises(BadInput) as e:
            engine.generate(_params(vae=name))
        assert e.value.field == "vae" and name in e.value.detail, e.value.detail
    assert engine.generate(_params()).images  # the server goes on serving
