"""A1111's clip skip and VAE settings through /sdapi/v1: options and override_settings take
effect (the same pixels as the engine's own fields), the infotext says so in A1111 1.9+'s
words, /sd-vae lists the VAE folder, and bad names are 400s naming the key."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from sdserve.engine.params import GenerationParams

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"


def _txt2img(client, **over):  # type: ignore[no-untyped-def]
    body = {"prompt": "a red kite", "negative_prompt": "fog", "width": 64, "height": 64, "steps": 2, "seed": 5,
            "sampler_name": "Euler", "cfg_scale": 7, "override_settings": {"sd_model_checkpoint": SD15, **over}}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _px(body) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).convert("RGB"), dtype=np.int16)


def _engine_px(engine, **extra) -> np.ndarray:  # type: ignore[no-untyped-def]
    from sdserve.api.dialects.a1111.adapter import resolve_sampler

    p = GenerationParams(model=SD15, prompt="a red kite", negative_prompt="fog", prompt_syntax="a1111", width=64,
                         height=64, steps=2, seed=5, guidance=7.0, scheduler=resolve_sampler("Euler", None, None).name,
                         **extra)
    return np.asarray(engine.generate(p).images[0], dtype=np.int16)


def test_override_settings_clip_skip_and_vae_apply(client, engine):
    import json

    plain = _txt2img(client)
    both = _txt2img(client, CLIP_stop_at_last_layers=2, sd_vae="tiny-vae.safetensors")
    assert np.array_equal(_px(both), _engine_px(engine, clip_skip=2, vae="tiny-vae.safetensors"))
    assert not np.array_equal(_px(both), _px(plain))
    info = json.loads(both["info"])
    text = info["infotexts"][0]
    vae_hash = engine.addons.find("vae", "tiny-vae", field="vae").sha256()[:10]
    for part in ("Sampler: Euler, Schedule type:", "Clip skip: 2", "VAE: tiny-vae.safetensors",
                 f"VAE hash: {vae_hash}"):
        assert part in text, (part, text)
    assert (info["clip_skip"], info["sd_vae_name"], info["sd_vae_hash"]) == (2, "tiny-vae.safetensors", vae_hash)
    plain_text = json.loads(plain["info"])["infotexts"][0]
    assert "Clip skip" not in plain_text and "VAE" not in plain_text  # A1111 writes neither by default


def test_options_set_clip_skip_and_vae_for_later_requests(client, engine):
    assert client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2,
                                                  "sd_vae": "tiny-vae-diffusers"}).json() is None
    opts = client.get("/sdapi/v1/options").json()
    assert (opts["CLIP_stop_at_last_layers"], opts["sd_vae"]) == (2, "tiny-vae-diffusers")
    assert np.array_equal(_px(_txt2img(client)), _engine_px(engine, clip_skip=2, vae="tiny-vae-diffusers"))
    # override_settings wins over the options for its request; Automatic is the model's own VAE
    assert np.array_equal(_px(_txt2img(client, CLIP_stop_at_last_layers=1, sd_vae="Automatic")), _engine_px(engine))


def test_sd_vae_lists_the_folder_and_refresh_finds_new_files(client, engine):
    listed = client.get("/sdapi/v1/sd-vae").json()
    names = {v["model_name"] for v in listed}
    assert {"tiny-vae.safetensors", "tiny-vae-diffusers"} <= names
    assert all(v["filename"].startswith(str(engine.addons.home("vae"))) for v in listed)
    src = engine.addons.find("vae", "tiny-vae", field="vae").path
    (engine.addons.home("vae") / "copied-in.safetensors").write_bytes(src.read_bytes())
    assert client.post("/sdapi/v1/refresh-vae").status_code == 200
    assert "copied-in.safetensors" in {v["model_name"] for v in client.get("/sdapi/v1/sd-vae").json()}


def test_bad_settings_are_400s_naming_the_key(client):
    for over, key in [({"sd_vae": "no-such-vae"}, "override_settings.sd_vae"),
                      ({"CLIP_stop_at_last_layers": 0}, "override_settings.CLIP_stop_at_last_layers"),
                      ({"eta_noise_seed_delta": 31337}, "override_settings.eta_noise_seed_delta")]:
        r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64,
                                                    "override_settings": over})
        assert r.status_code == 400 and r.json()["detail"].startswith(key), r.text
    r = client.post("/sdapi/v1/options", json={"sd_vae": "../../etc/passwd"})
    assert r.status_code == 400 and r.json()["detail"].startswith("sd_vae"), r.text
