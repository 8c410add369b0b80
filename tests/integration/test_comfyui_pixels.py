"""ComfyUI workflows on the real engine (tiny models): a compiled workflow gives the pixels
of the equivalent native request, and ComfyUI's (word:1.2) weights are applied as ComfyUI
applies them (interpolated from the empty prompt's embedding, not A1111's rescale)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdserve.api.dialects.comfyui.compile import CompileEnv, compile_prompt
from sdserve.engine.params import GenerationParams, input_images
from tests.conftest import png_of

FIXTURES = Path(__file__).parent.parent / "fixtures" / "comfyui"
SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"


PHOTO = png_of(Image.radial_gradient("L").convert("RGB").resize((64, 64)))


@pytest.fixture
def env(engine) -> CompileEnv:  # type: ignore[no-untyped-def]
    def load(name: str, sub: str | None, kind: str) -> bytes:
        if name != "photo.png":
            raise FileNotFoundError(name)
        return PHOTO
    return CompileEnv(engine.catalog, engine.addons, load)


def _small(wf: dict, **sampler) -> dict:  # type: ignore[type-arg]
    wf["5"]["inputs"].update(width=64, height=64)
    wf["3"]["inputs"].update(steps=3, seed=1234, **sampler)
    return wf


def _pixels(engine, params: GenerationParams) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(engine.generate(params).images[0], dtype=np.int16)


def _default() -> dict:  # type: ignore[type-arg]
    return json.loads((FIXTURES / "default_sd15_api.json").read_text())


@pytest.mark.parametrize(("sampler", "scheduler", "engine_name"), [
    ("euler", "normal", "euler_linspace"), ("dpmpp_2m", "karras", "dpmpp_2m_karras"),
    ("euler_ancestral", "simple", "euler_a_trailing")])
def test_default_workflow_gives_the_native_requests_pixels(engine, env, sampler, scheduler, engine_name):
    [job] = compile_prompt(_small(_default(), sampler_name=sampler, scheduler=scheduler), env)
    native = GenerationParams(model="sd15", prompt="beautiful scenery nature glass bottle landscape, , purple "
                              "galaxy bottle,", negative_prompt="text, watermark", prompt_syntax="comfyui", width=64,
                              height=64, steps=3, guidance=8.0, seed=1234, scheduler=engine_name)
    got = _pixels(engine, job.params)
    assert np.array_equal(got, _pixels(engine, native))
    assert got.std() > 1  # a real image, not a constant


def test_weighted_workflow_gives_the_native_requests_pixels_and_differs_from_a1111(engine, env):
    wf = _small(_default())
    wf["6"]["inputs"]["text"] = "a (glass bottle:1.4) on a ((beach))"
    [job] = compile_prompt(wf, env)
    native = job.params.model_copy(update={"model": "sd15"})
    comfy = _pixels(engine, job.params)
    assert np.array_equal(comfy, _pixels(engine, native))
    assert not np.array_equal(comfy, _pixels(engine, job.params.model_copy(update={"prompt_syntax": "a1111"})))
    assert not np.array_equal(comfy, _pixels(engine, job.params.model_copy(update={"prompt": "a glass bottle on a "
                                                                                              "beach"})))


def test_img2img_workflow_gives_the_native_requests_pixels(engine, env):
    wf = _small(_default(), denoise=0.6)
    wf["20"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}
    wf["21"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["4", 2]}}
    wf["3"]["inputs"]["latent_image"] = ["21", 0]
    del wf["5"]
    [job] = compile_prompt(wf, env)
    p = job.params
    native = GenerationParams(model="sd15", prompt=p.prompt, negative_prompt=p.negative_prompt, prompt_syntax="comfyui",
                              steps=p.steps, strength=p.strength, guidance=8.0, seed=1234, scheduler="euler_linspace",
                              inputs=input_images(init=PHOTO))
    assert p.steps == 5  # ComfyUI: 3 steps of an int(3 / 0.6)-step schedule
    assert np.array_equal(_pixels(engine, p), _pixels(engine, native))


def test_batch_of_a_workflow_is_the_native_batch(engine, env):
    wf = _small(_default())
    wf["5"]["inputs"]["batch_size"] = 2
    [job] = compile_prompt(wf, env)
    res = engine.generate(job.params)
    single = engine.generate(job.params.model_copy(update={"n": 1, "seed": job.params.seed + 1}))
    assert np.array_equal(np.asarray(res.images[1]), np.asarray(single.images[0]))


# ---- ComfyUI's weighting, checked against the text encoder directly --------------------------

def _encoder(engine):  # type: ignore[no-untyped-def]
    model = engine.load(SD15)
    return model.base


def test_comfyui_weight_interpolates_from_the_empty_prompt(engine):
    from sdserve.engine.prompt_encoding import encode_item

    pipe = _encoder(engine)
    tok, enc = pipe.tokenizer, pipe.text_encoder
    params = GenerationParams(model=SD15, prompt="a (cat:1.5) sits", prompt_syntax="comfyui")
    got = encode_item(pipe, params).prompt

    def hidden(ids: list[int]) -> torch.Tensor:
        pad = [tok.eos_token_id] * (77 - len(ids) - 2)
        with torch.inference_mode():
            return enc(torch.tensor([[tok.bos_token_id, *ids, tok.eos_token_id, *pad]]))[0]

    a, cat, sits = (tok(t, add_special_tokens=False).input_ids for t in ("a ", "cat", " sits"))
    z, empty = hidden(a + cat + sits), hidden([])
    want = z.clone()
    span = slice(1 + len(a), 1 + len(a) + len(cat))
    want[:, span] = (z[:, span] - empty[:, span]) * 1.5 + empty[:, span]
    assert torch.allclose(got, want, atol=1e-5)


def test_comfyui_keeps_short_segments_whole_across_chunks(engine):
    from sdserve.engine.prompt_encoding import _comfy_chunks
    from sdserve.engine.prompt_syntax import parse_comfy_prompt

    tok = _encoder(engine).tokenizer
    head = "x" * 70  # the tiny tokenizer reads one token per character
    chunks = _comfy_chunks(tok, parse_comfy_prompt(head + "(abcdefg:1.2)").fragments)
    # 70 + 7 > 75: the 7-token segment starts the second chunk whole.
    assert [len(ids) for ids, _ in chunks] == [len(tok(head, add_special_tokens=False).input_ids), 7]
    long_chunks = _comfy_chunks(tok, parse_comfy_prompt(head + "(abcdefghij:1.2)").fragments)
    assert long_chunks[0][1][-1] == 1.2  # a segment of 8+ tokens is split at the chunk's end


def test_prompt_and_negative_of_different_lengths_repeat_to_a_common_length(engine):
    from sdserve.engine.prompt_encoding import encode_item

    pipe = _encoder(engine)
    params = GenerationParams(model=SD15, prompt="y" * 100, negative_prompt="(bad:1.3)", prompt_syntax="comfyui")
    cond = encode_item(pipe, params)
    assert cond.prompt.shape[1] == 154 and cond.negative is not None and cond.negative.shape[1] == 154
    assert torch.equal(cond.negative[:, :77], cond.negative[:, 77:])
