"""LoRA and textual-inversion embeddings on the real engine, with the tiny add-ons the engine
writes in demo mode (engine.tiny_lora: kohya LoRAs, A1111 .pt and SDXL clip_l/clip_g
embeddings), checked against diffusers' own loaders on a plain pipeline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sdserve.engine.params import BatchItem, GenerationParams, LoraRef
from sdserve.errors import BadInput

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
BASE = {"width": 64, "height": 64, "steps": 2, "seed": 3, "guidance": 7.0, "scheduler": "euler"}
LORA = {SD15: "tiny_detail", SDXL: "tiny_detail_xl"}
EMB = {SD15: "tiny_style", SDXL: "tiny_style_xl"}
LAYOUT = {SD15: "sd15", SDXL: "sdxl"}


def _params(model: str, prompt: str = "a cat in a garden", **extra) -> GenerationParams:  # type: ignore[no-untyped-def]
    return GenerationParams(model=model, prompt=prompt, prompt_syntax="a1111", **{**BASE, **extra})


def _image(engine, model: str, prompt: str = "a cat in a garden", **extra) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(engine.generate(_params(model, prompt, **extra)).images[0], dtype=np.int16)


def _diffusers(tiny_dir, model: str, prompt: str, lora: str | None = None, weight: float | dict = 1.0,
               embedding: str | None = None, addon_dir=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The same request on a plain diffusers pipeline with diffusers' own loaders."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from safetensors.torch import load_file

    from sdserve.engine.pipelines import make_scheduler

    cls = StableDiffusionXLPipeline if model == SDXL else StableDiffusionPipeline
    pipe = cls.from_pretrained(str(tiny_dir / LAYOUT[model] / "base"), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.enable_slicing()
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    if lora is not None:
        pipe.load_lora_weights(str(addon_dir / "Lora" / f"{lora}.safetensors"), adapter_name="x")
        pipe.set_adapters(["x"], [weight])
    if embedding is not None:
        if model == SDXL:
            sd = load_file(str(addon_dir / "embeddings" / f"{embedding}.safetensors"))
            pipe.load_textual_inversion(sd["clip_l"], token=embedding, tokenizer=pipe.tokenizer,
                                        text_encoder=pipe.text_encoder)
            pipe.load_textual_inversion(sd["clip_g"], token=embedding, tokenizer=pipe.tokenizer_2,
                                        text_encoder=pipe.text_encoder_2)
        else:
            pipe.load_textual_inversion(str(addon_dir / "embeddings" / f"{embedding}.pt"), token=embedding)
    out = pipe(prompt=[prompt], num_images_per_prompt=1, guidance_scale=BASE["guidance"], width=64, height=64,
               num_inference_steps=BASE["steps"], generator=[torch.Generator("cpu").manual_seed(BASE["seed"])],
               output_type="pil").images[0]
    return np.asarray(out, dtype=np.int16)


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_lora_gives_diffusers_own_pixels(engine, tiny_dir, settings, model):
    ours = _image(engine, model, f"a cat in a garden <lora:{LORA[model]}:0.8>")
    theirs = _diffusers(tiny_dir, model, "a cat in a garden", lora=LORA[model], weight=0.8,
                        addon_dir=settings.addon_dir)
    assert np.abs(ours - theirs).max() <= 2
    assert not np.array_equal(ours, _image(engine, model)), "the LoRA changes the image"


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_unet_and_text_encoder_weights_apart_give_diffusers_own_pixels(engine, tiny_dir, settings, model):
    """ComfyUI's LoraLoaderModelOnly (text encoders 0) and A1111's <lora:name:te:unet> as
    diffusers' per-component set_adapters weights."""
    te = ("text_encoder", "text_encoder_2") if model == SDXL else ("text_encoder",)
    for unet_w, te_w in ((0.8, 0.0), (0.5, 1.5)):
        ours = _image(engine, model, loras=(LoraRef(name=LORA[model], weight=unet_w, text_encoder_weight=te_w),))
        theirs = _diffusers(tiny_dir, model, "a cat in a garden", lora=LORA[model],
                            weight={"unet": unet_w, **dict.fromkeys(te, te_w)}, addon_dir=settings.addon_dir)
        assert np.abs(ours - theirs).max() <= 2, (unet_w, te_w)
    # A1111's tag forms (te first, then unet) are the same field.
    apart = _image(engine, model, loras=(LoraRef(name=LORA[model], weight=0.5, text_encoder_weight=1.5),))
    for tag in (f"<lora:{LORA[model]}:1.5:0.5>", f"<lora:{LORA[model]}:te=1.5:unet=0.5>"):
        assert np.array_equal(apart, _image(engine, model, f"a cat in a garden {tag}")), tag
    both = _image(engine, model, loras=(LoraRef(name=LORA[model], weight=0.8),))
    assert not np.array_equal(both, _image(engine, model, loras=(LoraRef(name=LORA[model], weight=0.8,
                                                                         text_encoder_weight=0.0),)))


def test_weight_zero_tag_and_native_and_switching(engine):
    plain = _image(engine, SD15)
    assert np.array_equal(plain, _image(engine, SD15, "a cat in a garden <lora:tiny_detail:0>"))
    tagged = _image(engine, SD15, "a cat in a garden <lora:tiny_detail:0.6>")
    native = _image(engine, SD15, loras=(LoraRef(name="tiny_detail", weight=0.6),))
    assert np.array_equal(tagged, native)
    # Switching off again gives the plain image back (adapters disabled, not left active).
    assert np.array_equal(plain, _image(engine, SD15))
    p = engine.prepare(_params(SD15, "x <lora:tiny_detail:0.6>", loras=(LoraRef(name="tiny_detail", weight=0.6),)))
    assert [(r.name, r.weight) for r in p.loras] == [("tiny_detail", 0.6)]  # named twice alike: once
    assert engine.prepare(p) == p  # resolving again changes nothing


def test_different_loras_do_not_share_a_loop_and_same_ones_match_alone(engine):
    from sdserve.engine.params import batch_key

    a = engine.prepare(_params(SD15, "a cat <lora:tiny_detail:0.5>"))
    b = engine.prepare(_params(SD15, "a dog <lora:tiny_detail:0.5>", seed=9))
    c = engine.prepare(_params(SD15, "a cat <lora:tiny_detail:0.9>"))
    assert batch_key(a) == batch_key(b) != batch_key(c)
    alone = [np.asarray(engine.generate(p).images[0], dtype=np.int16) for p in (a, b, c)]
    together = engine.generate_batch([BatchItem(a), BatchItem(b), BatchItem(c)])
    for i, res in enumerate(together):
        assert np.abs(alone[i] - np.asarray(res.images[0], dtype=np.int16)).max() <= 2


@pytest.mark.parametrize(("model", "prompt", "field"), [
    (SD15, "a <lora:tiny_detail_xl:1>", "loras"),  # an SDXL LoRA on SD 1.5
    (SDXL, "a <lora:tiny_detail:1>", "loras"),
    (SD15, "a <lora:../Stable-diffusion/x:1>", "prompt"),
    (SD15, "a <lora:no_such_lora:1>", "prompt"),
    (SDXL, "a tiny_style", "embeddings"),  # an SD 1.5 embedding on SDXL
])
def test_bad_addons_are_4xx_naming_the_field_and_leave_the_model_clean(engine, model, prompt, field):
    with pytest.raises(BadInput) as e:
        engine.generate(_params(model, prompt))
    assert e.value.field == field
    # The server keeps serving, with no half-loaded adapter changing the next image.
    before = _image(engine, model)
    assert np.array_equal(before, _image(engine, model))
    loaded = engine.load(model)
    assert all("xl" in k if model == SDXL else "xl" not in k for k in loaded.lora_adapters)


@pytest.mark.parametrize("model", [SD15, SDXL])
def test_embedding_word_changes_the_image_as_diffusers_does(engine, tiny_dir, settings, model):
    word = EMB[model]
    ours = engine.generate(_params(model, f"a cat in a garden, {word}"))
    assert [e.name for e in ours.params.embeddings] == [word]
    theirs = _diffusers(tiny_dir, model, f"a cat in a garden, {word}", embedding=word, addon_dir=settings.addon_dir)
    assert np.abs(np.asarray(ours.images[0], dtype=np.int16) - theirs).max() <= 2
    assert not np.array_equal(theirs, _image(engine, model))
    # A plain-text prompt (OpenAI, Workers AI) reads the word as text, as those services do.
    plain = engine.generate(GenerationParams(model=model, prompt=f"a cat in a garden, {word}", prompt_syntax="plain",
                                             **BASE))
    assert plain.params.embeddings == ()
    # Our own A1111 encoding (weights) sees the embedding too.
    weighted = engine.generate(_params(model, f"a cat in a (garden:1.2), ({word}:1.0)"))
    assert [e.name for e in weighted.params.embeddings] == [word]


def test_infotext_names_lora_and_ti_hashes(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat tiny_style <lora:tiny_detail:0.7>", "steps": 2,
                                               "width": 64, "height": 64, "seed": 1,
                                               "sd_model_checkpoint": SD15,
                                               "override_settings": {"sd_model_checkpoint": SD15}})
    assert r.status_code == 200, r.text
    import json

    info = json.loads(r.json()["info"])["infotexts"][0]
    assert 'Lora hashes: "tiny_detail: ' in info and 'TI hashes: "tiny_style: ' in info


def test_a1111_listings_and_refresh(client, settings):
    names = [x["name"] for x in client.get("/sdapi/v1/loras").json()]
    assert {"tiny_detail", "tiny_detail_xl"} <= set(names)
    item = next(x for x in client.get("/sdapi/v1/loras").json() if x["name"] == "tiny_detail")
    assert item["metadata"]["ss_network_module"] == "networks.lora" and item["path"].endswith(".safetensors")
    lora_dir = settings.addon_dir / "Lora"
    copy = lora_dir / "copied_in.safetensors"
    shutil.copy(lora_dir / "tiny_detail.safetensors", copy)
    try:
        assert client.post("/sdapi/v1/refresh-loras").status_code == 200
        assert "copied_in" in [x["name"] for x in client.get("/sdapi/v1/loras").json()]
    finally:
        copy.unlink()
        client.post("/sdapi/v1/refresh-loras")
    emb = client.get("/sdapi/v1/embeddings").json()
    every = {**emb["loaded"], **emb["skipped"]}
    assert every["tiny_style"]["vectors"] == 2 and every["tiny_style_xl"]["vectors"] == 2
    assert client.post("/sdapi/v1/refresh-embeddings").status_code == 200
    listed = client.get("/v1/addons", params={"kind": "lora"}).json()["data"]
    assert {"tiny_detail", "tiny_detail_xl"} <= {x["name"] for x in listed}


def test_dialects_name_their_own_fields(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a <lora:nope_nothing:1>", "steps": 2, "width": 64,
                                               "height": 64})
    assert r.status_code in (400, 422) and "nope_nothing" in r.text
    body = {"key": "x", "prompt": "a cat", "width": 64, "height": 64, "num_inference_steps": 2, "samples": 1,
            "lora_model": "tiny_detail,nope_nothing", "lora_strength": "0.5,0.7"}
    r = client.post("/api/v6/images/text2img", json=body)
    assert r.status_code == 400 and "lora_model" in r.text, r.text
    r = client.post("/api/v6/images/text2img", json={**body, "lora_model": "tiny_detail", "seed": 5,
                                                      "model_id": SD15, "lora_strength": "0.6"})
    assert r.status_code == 200 and r.json()["meta"]["lora_strength"] == "0.6", r.text
    r = client.post("/v1/jobs", json={"model": SD15, "prompt": "a cat", "loras": [{"name": "tiny_detail"}],
                                      "steps": 2, "width": 64, "height": 64})
    assert r.status_code in (200, 201, 202), r.text
    assert r.json()["params"]["loras"][0]["name"] == "tiny_detail"


def test_a_catalog_preset_bakes_its_loras_in(settings, engine, tiny_dir):
    from sdserve.compose import build_engine
    from sdserve.config import UserModel

    preset = UserModel(id="detail-preset", source=str(tiny_dir / "sd15" / "base"), arch="sd15",
                       loras={"tiny_detail": 0.6})
    other = build_engine(settings.model_copy(update={"models": [preset]}))
    res = other.generate(GenerationParams(model="detail-preset", prompt="a cat in a garden", **BASE))
    assert [(r.name, r.weight) for r in res.params.loras] == [("tiny_detail", 0.6)]
    tagged = _image(engine, SD15, "a cat in a garden <lora:tiny_detail:0.6>")
    assert np.array_equal(np.asarray(res.images[0], dtype=np.int16), tagged)
    with pytest.raises(BadInput) as e:  # the preset's weight is the model's: a different one conflicts
        other.prepare(_params("detail-preset", "a cat <lora:tiny_detail:0.9>"))
    assert e.value.field == "prompt"


def test_adapters_stay_loaded_and_count_in_the_model_size(engine, monkeypatch):
    import sdserve.engine.lora_adapters as adapters

    engine.generate(_params(SD15, "a <lora:tiny_detail:0.3>"))
    size = engine.health()["model_bytes"][SD15]
    reads = []
    real = adapters.read_lora_file
    monkeypatch.setattr(adapters, "read_lora_file", lambda *a: reads.append(a) or real(*a))
    for w in (0.4, 0.5):  # switching weights and back to none: no disk read, no new adapter
        engine.generate(_params(SD15, f"a <lora:tiny_detail:{w}>"))
    engine.generate(_params(SD15, "a"))
    assert reads == []
    assert engine.health()["model_bytes"][SD15] == size
    assert size > 0 and any(k.startswith("tiny_detail\0") for k in engine.load(SD15).lora_adapters)
