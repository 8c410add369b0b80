"""Every A1111 sampler this server lists, and each schedule option, makes a 2-step image
through /sdapi/v1/txt2img on the tiny SD 1.5, and the response names it as A1111 does. Refused samplers and schedule types are 400s naming the field."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from sdserve.api.dialects.a1111.samplers import LABELS, SAMPLERS

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"


def _px(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")).astype(int)


def _txt2img(client, **body):  # type: ignore[no-untyped-def]
    body = {"prompt": "a red kite", "width": 64, "height": 64, "steps": 2, "seed": 5,
            "override_settings": {"sd_model_checkpoint": SD15}, **body}
    return client.post("/sdapi/v1/txt2img", json=body)


@pytest.mark.parametrize("sampler", [s.label for s in SAMPLERS if s.engine])
def test_every_sampler_makes_an_image(client, sampler: str) -> None:  # type: ignore[no-untyped-def]
    r = _txt2img(client, sampler_name=sampler)
    assert r.status_code == 200, r.text
    assert r.json()["images"] and f'"sampler_name": "{sampler}"' in r.json()["info"]  # Automatic: A1111's own name


# One sampler of each diffusers class on each schedule option it takes (every other
# combination differs only in the class's config option, which test_schedulers checks).
@pytest.mark.parametrize("label", sorted({ls[0] for n, ls in LABELS.items()
                                          if n.startswith(("dpmpp_3m_sde_", "ddim_"))}))
def test_every_schedule_option_makes_an_image(client, label: str) -> None:  # type: ignore[no-untyped-def]
    r = _txt2img(client, sampler_name=label)
    assert r.status_code == 200, r.text
    assert f'"sampler_name": "{label}"' in r.json()["info"]  # written as A1111 reads it back


def test_listed_samplers_and_schedule_types_combine(client) -> None:  # type: ignore[no-untyped-def]
    samplers = [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
    types = client.get("/sdapi/v1/schedulers").json()
    assert {"DPM++ 3M SDE", "DPM++ 2M SDE Heun", "PLMS", "UniPC"} <= set(samplers)
    assert {t["name"] for t in types} >= {"automatic", "normal", "simple", "sgm_uniform", "beta", "exponential"}
    sgm = next(t for t in types if t["name"] == "sgm_uniform")
    assert sgm == {"name": "sgm_uniform", "label": "SGM Uniform", "aliases": ["SGMUniform"], "default_rho": -1.0,
                   "need_inner_model": True}
    # SillyTavern's defaults on a fresh install.
    r = _txt2img(client, sampler_name="Euler a", scheduler="normal")
    assert r.status_code == 200, r.text


def test_schedule_types_change_the_image(client) -> None:  # type: ignore[no-untyped-def]
    images = {t: _txt2img(client, sampler_name="Euler", scheduler=t).json()["images"][0]
              for t in ("Normal", "Karras", "Exponential", "Beta", "Simple", "DDIM")}
    assert len(set(images.values())) == len(images)


@pytest.mark.parametrize(("body", "field", "named"), [
    ({"sampler_name": "DPM++ 2S a"}, "sampler_name", "DPM++ 2M"),
    ({"sampler_name": "Restart"}, "sampler_name", "Euler a"),
    ({"sampler_name": "Euler", "scheduler": "align_your_steps"}, "scheduler", "Karras"),
    ({"sampler_name": "Euler a", "scheduler": "Karras"}, "scheduler", "Normal"),
])
def test_refusals_name_the_field_and_the_alternatives(client, body, field: str, named: str) -> None:  # type: ignore[no-untyped-def]
    r = _txt2img(client, **body)
    assert r.status_code == 400
    text = r.text
    assert field in text and named in text


@pytest.mark.parametrize("sampler", ["DPM++ SDE", "DPM++ 3M SDE"])
def test_stochastic_samplers_repeat_with_the_seed(client, sampler: str) -> None:  # type: ignore[no-untyped-def]
    # Their per-step noise comes from the image's own seeded generator: alone or in a batch.
    alone = _px(_txt2img(client, sampler_name=sampler, seed=9).json()["images"][0])
    first, second = (_px(i) for i in _txt2img(client, sampler_name=sampler, seed=9, batch_size=2).json()["images"])
    assert np.abs(alone - first).max() <= 1  # batched float sums may round one level apart
    assert np.abs(alone - second).max() > 8
