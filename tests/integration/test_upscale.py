"""Upscaling as a user sees it: A1111's extras routes and listings (through ``webuiapi``),
each image an "upscale" job of the job service, on the demo's tiny upscaler files."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image

from tests.integration.test_a1111 import api, base_url  # noqa: F401 - the module's live server fixtures

TINY_X4, TINY_X2 = "tiny-ESRGAN-4x", "tiny-RealESRGAN_x2plus"


def _image(w: int = 75, h: int = 50) -> Image.Image:
    return Image.fromarray(np.random.RandomState(3).randint(0, 256, (h, w, 3), dtype=np.uint8))


def _b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_listings(base_url: str) -> None:
    ups = httpx.get(base_url + "/sdapi/v1/upscalers").json()
    assert [u["name"] for u in ups] == ["None", "Lanczos", "Nearest", TINY_X4, TINY_X2]
    assert {u["name"]: u["scale"] for u in ups}[TINY_X2] == 2 and ups[3]["model_path"].endswith(".pth")
    modes = [m["name"] for m in httpx.get(base_url + "/sdapi/v1/latent-upscale-modes").json()]
    assert modes[0] == "Latent" and "Latent (nearest-exact)" in modes and len(modes) == 6
    assert [m["name"] for m in httpx.get(base_url + "/sdapi/v1/realesrgan-models").json()] == [TINY_X2]
    # The demo's tiny CodeFormer and GFPGAN (+ detector).
    codeformer, gfpgan = httpx.get(base_url + "/sdapi/v1/face-restorers").json()
    assert gfpgan["name"] == "GFPGAN" and gfpgan["cmd_dir"].endswith("GFPGAN") and codeformer["name"] == "CodeFormer"


def test_single_image_by_factor_and_to_size(api: webuiapi.WebUIApi) -> None:
    im = _image()
    r = api.extra_single_image(image=im, upscaler_1=TINY_X4, upscaling_resize=2)
    assert r.image.size == (144, 96)  # A1111 rounds each side down to 8: 150 -> 144
    assert "Postprocess upscaler: tiny-ESRGAN-4x" in r.info
    again = api.extra_single_image(image=im, upscaler_1=TINY_X4, upscaling_resize=2)
    assert np.array_equal(np.asarray(again.image), np.asarray(r.image))
    lanczos = api.extra_single_image(image=im, upscaler_1="Lanczos", upscaling_resize=2)
    assert lanczos.image.size == (144, 96) and not np.array_equal(np.asarray(lanczos.image), np.asarray(r.image))
    # Scale to 200x50: by the larger ratio (200/75), sides down to 8 (200x128); with crop,
    # centred on a 200x50 canvas.
    to = dict(upscaler_1="Nearest", resize_mode=1, upscaling_resize_w=200, upscaling_resize_h=50)
    scaled = api.extra_single_image(image=im, upscaling_crop=False, **to)
    assert scaled.image.size == (200, 128)
    crop = api.extra_single_image(image=im, upscaling_crop=True, **to)
    assert crop.image.size == (200, 50)
    assert np.array_equal(np.asarray(crop.image), np.asarray(scaled.image)[39:89])
    unchanged = api.extra_single_image(image=im, upscaler_1="None")
    assert np.array_equal(np.asarray(unchanged.image.convert("RGB")), np.asarray(im))


def test_batch_with_a_second_upscaler(api: webuiapi.WebUIApi) -> None:
    ims = [_image(), _image(40, 64)]
    r = api.extra_batch_images(images=ims, upscaler_1=TINY_X2, upscaling_resize=3, upscaler_2="Nearest",
                               extras_upscaler_2_visibility=0.5)
    assert [i.size for i in r.images] == [(224, 144), (120, 192)]
    assert "Postprocess upscaler 2: Nearest (0.5)" in r.info
    only_x2 = api.extra_single_image(image=ims[0], upscaler_1=TINY_X2, upscaling_resize=3)
    near = api.extra_single_image(image=ims[0], upscaler_1="Nearest", upscaling_resize=3)
    blend = Image.blend(only_x2.image.convert("RGB"), near.image.convert("RGB"), 0.5)
    assert np.array_equal(np.asarray(r.images[0].convert("RGB")), np.asarray(blend))


@pytest.mark.parametrize(("body", "field"), [
    ({"upscaler_1": "R-ESRGAN 9x"}, "upscaler_1"),
    ({"upscaler_1": "Lanczos", "upscaler_2": "nope", "extras_upscaler_2_visibility": 0.3}, "upscaler_2"),
    ({"upscaler_1": "Lanczos", "upscaling_resize": 9}, "upscaling_resize"),
    ({"upscaler_1": "Lanczos", "resize_mode": 1, "upscaling_resize_w": 8000, "upscaling_resize_h": 8000},
     "upscaling_resize_w"),
    ({"upscaler_1": "Lanczos", "codeformer_visibility": 1, "codeformer_weight": 2}, "codeformer_weight"),
    ({"upscaler_1": "Lanczos", "image": "not base64!"}, "image"),
])
def test_bad_input_names_the_field(base_url: str, body: dict, field: str) -> None:
    r = httpx.post(base_url + "/sdapi/v1/extra-single-image", json={"image": _b64(_image()), **body})
    assert r.status_code in (400, 422), r.text
    assert r.json()["detail"].startswith(f"{field}:"), r.text


def test_a_corrupt_upscaler_file_is_a_4xx_and_the_server_keeps_serving(base_url: str, engine) -> None:  # type: ignore[no-untyped-def]
    bad = engine.addons.home("upscaler") / "corrupt-4x.pth"
    bad.write_bytes(b"\x80\x02garbage")
    try:
        r = httpx.post(base_url + "/sdapi/v1/extra-single-image",
                       json={"image": _b64(_image()), "upscaler_1": "corrupt-4x"})
        assert r.status_code == 400 and "corrupt-4x.pth" in r.json()["detail"], r.text
        assert r.json()["detail"].startswith("upscaler_1:")
    finally:
        bad.unlink()
        engine.addons.refresh("upscaler")
    ok = httpx.post(base_url + "/sdapi/v1/extra-single-image", json={"image": _b64(_image()), "upscaler_1": TINY_X4})
    assert ok.status_code == 200


def _wait_job(base_url: str, job: dict) -> dict:
    for _ in range(600):
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        import time

        time.sleep(0.1)
        job = httpx.get(f"{base_url}/v1/jobs/{job['id']}").json()
    raise AssertionError(f"job {job['id']} did not finish")


def test_native_upscale_job_and_generation_upscale(base_url: str) -> None:
    r = httpx.post(base_url + "/v1/upscale", json={"image": _b64(_image()), "upscaler": TINY_X2, "scale": 2})
    assert r.status_code == 201, r.text
    job = _wait_job(base_url, r.json())
    assert job["status"] == "succeeded" and job["params"]["task"] == "upscale"
    img = Image.open(io.BytesIO(httpx.get(job["outputs"][0]["url"]).content))
    assert img.size == (150, 100) and "Postprocess upscaler: tiny-RealESRGAN_x2plus" in img.info["parameters"]
    bad = httpx.post(base_url + "/v1/upscale", json={"image": _b64(_image()), "upscaler": "nope"})
    assert bad.status_code == 400 and "upscaler" in bad.text
    gen = httpx.post(base_url + "/v1/jobs", json={"model": "@cf/runwayml/stable-diffusion-v1-5-img2img",
                                                  "prompt": "x", "steps": 2, "width": 64, "height": 64, "seed": 1,
                                                  "upscale": {"upscaler": TINY_X4, "scale": 1.5}, "tiling": True})
    assert gen.status_code == 201, gen.text
    job = _wait_job(base_url, gen.json())
    img = Image.open(io.BytesIO(httpx.get(job["outputs"][0]["url"]).content))
    assert img.size == (96, 96) and "Tiling: True" in img.info["parameters"]


def test_modelslab_super_resolution_and_upscale_flag(base_url: str) -> None:
    data_uri = "data:image/png;base64," + _b64(_image())
    r = httpx.post(base_url + "/api/v3/super_resolution", json={"key": "k", "url": data_uri, "scale": 2,
                                                                "model_id": TINY_X4})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", body
    assert Image.open(io.BytesIO(httpx.get(body["output"][0], follow_redirects=True).content)).size == (150, 100)
    assert body["meta"]["upscaler"] == TINY_X4 and body["meta"]["scale"] == 2
    for bad, field in (({"model_id": "nope"}, "model_id"), ({"face_enhance": True, "model_id": "nope"}, "model_id"),
                       ({"scale": 50}, "scale")):
        r = httpx.post(base_url + "/api/v3/super_resolution", json={"key": "k", "url": data_uri, **bad})
        assert r.status_code == 400 and field in r.text, r.text
    r = httpx.post(base_url + "/api/v3/text2img", json={"key": "k", "prompt": "x", "width": 64, "height": 64,
                                                        "num_inference_steps": 2, "upscale": "yes", "seed": 3})
    body = r.json()
    assert body["status"] == "success", body
    out = Image.open(io.BytesIO(httpx.get(body["output"][0], follow_redirects=True).content))
    assert out.size == (128, 128) and body["meta"]["upscale"] == "yes"
