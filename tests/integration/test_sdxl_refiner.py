"""The SDXL refiner catalog entry on the real engine (tiny refiner: one text encoder, aesthetic
score conditioning): the base + refiner split equals diffusers' own, prompts in every syntax
reach its one encoder, and it runs img2img alone."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sdserve.engine.hires import Refiner
from sdserve.engine.params import GenerationParams, StepInfo
from sdserve.errors import BadInput
from tests.conftest import make_params, png_bytes
from tests.jobs_support import wait_done

SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
REFINER = "stabilityai/stable-diffusion-xl-refiner-1.0"
BASE = {"model": SDXL, "prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "width": 64, "height": 64,
        "steps": 5, "seed": 11, "guidance": 6.0, "scheduler": "euler"}


def _arr(img) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_base_and_refiner_equal_diffusers_own_split(engine, tiny_dir):  # type: ignore[no-untyped-def]
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    steps: list[StepInfo] = []
    ours = engine.generate(GenerationParams(**BASE, refiner=Refiner(model=REFINER, switch_at=0.6)),
                           on_step=steps.append).images[0]
    assert [(s.step, s.total) for s in steps] == [(i, 5) for i in range(1, 6)]

    base = StableDiffusionXLPipeline.from_pretrained(str(tiny_dir / "sdxl" / "base"), local_files_only=True)
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(tiny_dir / "sdxl-refiner" / "base"),
                                                               local_files_only=True)
    assert refiner.config.requires_aesthetics_score and refiner.text_encoder is None
    for pipe in (base, refiner):
        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
    common = dict(prompt=BASE["prompt"], negative_prompt=BASE["negative_prompt"], num_inference_steps=5,
                  guidance_scale=6.0)
    with torch.inference_mode():
        latents = base(**common, width=64, height=64, denoising_end=0.6, output_type="latent",
                       generator=torch.Generator("cpu").manual_seed(11)).images
        theirs = refiner(**common, image=latents, denoising_start=0.6,
                         generator=torch.Generator("cpu").manual_seed(11)).images[0]
    assert np.abs(_arr(ours) - _arr(theirs)).max() <= 2
    plain = engine.generate(GenerationParams(**BASE)).images[0]
    assert np.abs(_arr(ours) - _arr(plain)).mean() > 0.5  # the refiner really ran


@pytest.mark.parametrize("syntax", ["a1111", "comfyui"])
def test_weighted_and_long_prompts_reach_the_refiners_one_encoder(engine, syntax):  # type: ignore[no-untyped-def]
    def run(prompt: str) -> np.ndarray:
        p = GenerationParams(**{**BASE, "prompt": prompt, "steps": 4}, prompt_syntax=syntax,
                             refiner=Refiner(model=REFINER, switch_at=0.5))
        return _arr(engine.generate(p).images[0])

    plain = run("a lighthouse at dusk")
    assert np.array_equal(plain, run("a lighthouse at dusk"))
    assert np.array_equal(plain, run("a lighthouse at (dusk:1.0)"))  # weight 1 reads as plain text
    assert np.abs(run("a lighthouse at (dusk:1.6)") - plain).mean() > 0.1
    assert run(", ".join(["a lighthouse at dusk"] * 12)).shape == plain.shape  # beyond 75 tokens: chunks


def test_refiner_alone_does_img2img_and_refuses_txt2img(engine):  # type: ignore[no-untyped-def]
    p = make_params(model="sdxl-refiner", prompt="a lighthouse", steps=4, seed=1, init_image=png_bytes((64, 64)))
    r = engine.generate(p)
    assert r.images[0].size == (64, 64)
    with pytest.raises(BadInput) as e:
        engine.prepare(GenerationParams(model=REFINER, prompt="a lighthouse"))
    assert e.value.field == "image"
    # It finishes an SDXL schedule only: not SD 1.5's, and not as the request's own model.
    with pytest.raises(BadInput) as e:
        engine.prepare(GenerationParams(model="sd15", prompt="x", refiner=Refiner(model=REFINER)))
    assert e.value.field == "refiner.model"


def test_a1111_refiner_checkpoint_and_native_refiner_run_it(client, engine):  # type: ignore[no-untyped-def]
    body = {"prompt": BASE["prompt"], "negative_prompt": BASE["negative_prompt"], "width": 64, "height": 64,
            "steps": 5, "seed": 11, "cfg_scale": 6, "sampler_name": "Euler", "scheduler": "Automatic",
            "override_settings": {"sd_model_checkpoint": SDXL}, "refiner_checkpoint": REFINER,
            "refiner_switch_at": 0.6}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    img = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    # A1111's Euler with the Automatic schedule type is the engine's euler_linspace.
    ours = engine.generate(GenerationParams(**{**BASE, "scheduler": "euler_linspace"}, prompt_syntax="a1111",
                                            refiner=Refiner(model=REFINER, switch_at=0.6))).images[0]
    assert np.abs(_arr(img) - _arr(ours)).max() <= 2
    assert f"Refiner: {REFINER}" in json.loads(r.json()["info"])["infotexts"][0]
    # Native: the refiner object, recorded on the job.
    job = client.post("/v1/jobs", json={**BASE, "refiner": {"model": "sdxl-refiner", "switch_at": 0.6}}).json()
    job = wait_done(client, job["id"])
    assert job["status"] == "succeeded", job
    assert job["params"]["refiner"] == {"model": "sdxl-refiner", "switch_at": 0.6}
