"""Hires fix and the SDXL refiner on the real engine (tiny models): sizes, batching, progress
over both passes, the upscaler choice, and A1111's fields and infotext through webuiapi."""

from __future__ import annotations

from urllib.parse import urlparse

import numpy as np
import pytest
import webuiapi

from sdserve.engine.hires import HiresFix, Refiner
from sdserve.engine.params import BatchItem, GenerationParams, StepInfo
from sdserve.errors import BadInput
from tests.conftest import make_app
from tests.integration.live_server import live_server

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
LIGHTNING = "@cf/bytedance/stable-diffusion-xl-lightning"
REQ = {"model": SD15, "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 3, "seed": 5}


def _arr(img) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_hires_makes_the_target_size_and_counts_both_passes(engine):  # type: ignore[no-untyped-def]
    steps: list[StepInfo] = []
    p = GenerationParams(**REQ, hires=HiresFix(scale=2, steps=2))
    r = engine.generate(p, on_step=steps.append)
    assert r.images[0].size == (128, 128)
    assert [(s.step, s.total) for s in steps] == [(i, 5) for i in range(1, 6)]  # 3 + 2 hires steps
    # Both sides given: upscale to cover, crop to the box (A1111's truncate).
    wide = engine.generate(GenerationParams(**REQ, hires=HiresFix(resize_x=128, resize_y=96, steps=1)))
    assert wide.images[0].size == (128, 96)
    one_side = engine.generate(GenerationParams(**{**REQ, "width": 96}, hires=HiresFix(resize_x=192, steps=1)))
    assert one_side.images[0].size == (192, 128)


def test_hires_images_are_the_same_alone_and_batched(engine):  # type: ignore[no-untyped-def]
    for upscaler in ("Latent", "Lanczos"):
        reqs = [GenerationParams(**{**REQ, "prompt": f"prompt {i}", "seed": 40 + i},
                                 hires=HiresFix(scale=1.5, steps=2, upscaler=upscaler)) for i in range(2)]
        alone = [_arr(engine.generate(r).images[0]) for r in reqs]
        batched = engine.generate_batch([BatchItem(r) for r in reqs])
        for a, b in zip(alone, batched, strict=True):
            assert not isinstance(b, Exception), b
            assert np.abs(a - _arr(b.images[0])).max() <= 2, upscaler


def test_latent_and_image_upscalers_differ_and_are_each_deterministic(engine):  # type: ignore[no-untyped-def]
    def run(upscaler: str) -> np.ndarray:
        return _arr(engine.generate(GenerationParams(**REQ, hires=HiresFix(steps=2, upscaler=upscaler))).images[0])

    latent, lanczos = run("Latent"), run("Lanczos")
    assert np.array_equal(latent, run("Latent"))
    assert np.abs(latent - lanczos).mean() > 1
    assert np.abs(run("Latent (nearest)") - latent).mean() > 0


def test_hires_with_a_model_upscaler_file(settings, tmp_path):  # type: ignore[no-untyped-def]
    # An upscaler model from the add-on folders (models/ESRGAN), in the real file format.
    from sdserve.compose import build_engine
    from sdserve.engine.tiny_upscalers import write_tiny_upscalers

    eng = build_engine(settings.model_copy(update={"models_dir": tmp_path}))
    write_tiny_upscalers(eng.addons.home("upscaler"))
    eng.addons.refresh("upscaler")
    p = GenerationParams(**REQ, hires=HiresFix(steps=1, upscaler="tiny-ESRGAN-4x"))
    r = eng.generate(p)
    assert r.images[0].size == (128, 128)
    # The loaded upscaler counts against the engine's memory budget (in no model slot).
    assert any(k.startswith("upscaler:tiny-ESRGAN-4x") for k in eng.health()["model_bytes"])
    lanczos = eng.generate(p.model_copy(update={"hires": HiresFix(steps=1, upscaler="Lanczos")}))
    assert np.abs(_arr(r.images[0]) - _arr(lanczos.images[0])).mean() > 1


def test_hires_bad_input_names_the_field(engine):  # type: ignore[no-untyped-def]
    cases = [(HiresFix(upscaler="Bogus"), "hires.upscaler"), (HiresFix(scale=8), "hires.scale"),
             (HiresFix(model="nope"), "hires.model"), (HiresFix(model=SDXL), "hires.model"),
             (HiresFix(scheduler="nope"), "hires.scheduler")]
    for hires, field in cases:
        with pytest.raises(BadInput) as e:
            engine.prepare(GenerationParams(**{**REQ, "width": 1024}, hires=hires))
        assert e.value.field == field, (hires, e.value)


def test_refiner_finishes_an_sdxl_schedule(engine):  # type: ignore[no-untyped-def]
    base = {**REQ, "model": SDXL, "steps": 4}
    steps: list[StepInfo] = []
    plain = engine.generate(GenerationParams(**base)).images[0]
    refined = engine.generate(GenerationParams(**base, refiner=Refiner(model=LIGHTNING, switch_at=0.5)),
                              on_step=steps.append).images[0]
    again = engine.generate(GenerationParams(**base, refiner=Refiner(model=LIGHTNING, switch_at=0.5))).images[0]
    assert refined.size == plain.size == (64, 64)
    assert np.array_equal(_arr(refined), _arr(again)) and np.abs(_arr(refined) - _arr(plain)).mean() > 0.5
    assert steps[-1].step == steps[-1].total == 4
    # Only an SDXL base with an SDXL refiner: diffusers' split is SDXL's.
    for params, field in ((GenerationParams(**REQ, refiner=Refiner(model=LIGHTNING)), "refiner.model"),
                          (GenerationParams(**base, refiner=Refiner(model=SD15)), "refiner.model"),
                          (GenerationParams(**base, refiner=Refiner(model="nope")), "refiner.model")):
        with pytest.raises(BadInput) as e:
            engine.prepare(params)
        assert e.value.field == field


@pytest.fixture(scope="module")
def api(settings, engine):  # type: ignore[no-untyped-def]
    with live_server(make_app(settings, engine)) as url:
        u = urlparse(url)
        yield webuiapi.WebUIApi(host=u.hostname, port=u.port, sampler="Euler a", steps=2)


def test_a1111_hires_fields_are_applied_and_recorded(api):  # type: ignore[no-untyped-def]
    r = api.txt2img(prompt="a cat", seed=7, width=64, height=64, enable_hr=True, hr_scale=2,
                    hr_upscaler="Latent (bicubic)", hr_second_pass_steps=2, denoising_strength=0.6,
                    hr_sampler_name="DPM++ 2M", hr_prompt="a cat, detailed")
    assert r.images[0].size == (128, 128)
    text = r.info["infotexts"][0]
    for field in ("Size: 64x64", "Denoising strength: 0.6", "Hires upscale: 2.0", "Hires steps: 2",
                  "Hires upscaler: Latent (bicubic)", "Hires sampler: DPM++ 2M", 'Hires prompt: "a cat, detailed"'):
        assert field in text, (field, text)
    assert r.info["extra_generation_params"]["Hires upscaler"] == "Latent (bicubic)"
    assert r.info["extra_generation_params"]["Hires prompt"] == "a cat, detailed"  # quoted only in the infotext
    same = api.txt2img(prompt="a cat", seed=7, width=64, height=64, enable_hr=True, hr_scale=2,
                       hr_upscaler="Latent (bicubic)", hr_second_pass_steps=2, denoising_strength=0.6,
                       hr_sampler_name="DPM++ 2M", hr_prompt="a cat, detailed")
    assert np.array_equal(_arr(same.images[0]), _arr(r.images[0]))
    plain = api.txt2img(prompt="a cat", seed=7, width=64, height=64, enable_hr=True, hr_resize_x=96, hr_resize_y=64,
                        hr_upscaler="Lanczos")
    assert plain.images[0].size == (96, 64) and "Hires resize: 96x64" in plain.info["infotexts"][0]


def test_an_interrupt_keeps_the_partial_images(engine):  # type: ignore[no-untyped-def]
    # Interrupted in the first pass of a hires request: the first pass's latents are decoded
    # (A1111's sample_hr_pass returns them when interrupted), at the first pass's size.
    seen: list[StepInfo] = []

    def stop_after_two() -> bool:
        return len(seen) >= 2

    item = BatchItem(GenerationParams(**{**REQ, "steps": 20, "n": 2}, hires=HiresFix(steps=2)), on_step=seen.append,
                     interrupt=stop_after_two)
    (result,) = engine.generate_batch([item])
    assert not isinstance(result, Exception), result
    assert [im.size for im in result.images] == [(64, 64), (64, 64)]
    assert len(seen) == 3 and result.warnings[-1].startswith("interrupted")  # the step it saw it in ran
    full = engine.generate(GenerationParams(**{**REQ, "steps": 20, "n": 2}, hires=HiresFix(steps=2)))
    assert full.images[0].size == (128, 128)


def test_modelslab_highres_fix_and_native_hires(settings, engine):  # type: ignore[no-untyped-def]
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    with TestClient(make_app(settings, engine, modelslab_wait_s=300)) as client:
        _modelslab_and_native(client)


def _modelslab_and_native(client):  # type: ignore[no-untyped-def]
    import base64
    import io

    from PIL import Image

    body = {"prompt": "a lighthouse", "model_id": SD15, "width": "128", "height": "128", "num_inference_steps": "2",
            "seed": "3", "base64": "yes"}
    r = client.post("/api/v3/text2img", json={**body, "highres_fix": "yes"})
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    out = r.json()
    assert Image.open(io.BytesIO(base64.b64decode(out["output"][0]))).size == (128, 128)
    assert (out["meta"]["W"], out["meta"]["highres_fix"]) == (128, "yes")
    assert "Hires resize: 128x128" in Image.open(io.BytesIO(base64.b64decode(out["output"][0]))).info["parameters"]
    from tests.conftest import png_bytes

    init = "data:image/png;base64," + base64.b64encode(png_bytes((128, 128))).decode()
    bad = client.post("/api/v3/img2img", json={**body, "highres_fix": "yes", "init_image": init})
    assert bad.status_code == 400 and bad.json()["status"] == "error" and "highres_fix" in bad.text, bad.text
    # Native: the hires object as the engine takes it.
    job = client.post("/v1/jobs", json={"model": SD15, "prompt": "x", "width": 64, "height": 64, "steps": 2,
                                        "hires": {"scale": 1.5, "upscaler": "Nearest", "steps": 1}})
    assert job.status_code in (200, 201, 202), job.text
    from tests.jobs_support import wait_done

    done = wait_done(client, job.json()["id"])
    assert done["status"] == "succeeded" and done["params"]["hires"]["upscaler"] == "Nearest", done
    img = client.get(done["outputs"][0]["url"])
    assert Image.open(io.BytesIO(img.content)).size == (96, 96)
    bad = client.post("/v1/jobs", json={"model": SD15, "prompt": "x", "hires": {"upscaler": "Bogus"}})
    assert bad.status_code == 400 and "hires.upscaler" in bad.text
