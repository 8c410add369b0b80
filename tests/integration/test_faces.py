"""Face restoration as a user sees it, on the demo's tiny GFPGAN, CodeFormer and RetinaFace files
(real formats, random weights: the tiny detector reports one face in any image)."""

from __future__ import annotations

import base64
import io
import time

import httpx
import numpy as np
import webuiapi
from PIL import Image

from tests.integration.test_a1111 import api, base_url  # noqa: F401 - the module's live server fixtures

_GEN = {"prompt": "a portrait", "seed": 5, "steps": 2, "width": 128, "height": 128, "sampler_name": "Euler"}


def _b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _img(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int32)


def test_a1111_restore_faces(base_url: str) -> None:
    plain = httpx.post(base_url + "/sdapi/v1/txt2img", json=_GEN, timeout=300).json()
    fixed = httpx.post(base_url + "/sdapi/v1/txt2img", json={**_GEN, "restore_faces": True}, timeout=300).json()
    again = httpx.post(base_url + "/sdapi/v1/txt2img", json={**_GEN, "restore_faces": True,
                                                             "override_settings": {"face_restoration_model": "gfpgan"}},
                       timeout=300).json()
    a, b = _img(plain["images"][0]), _img(fixed["images"][0])
    changed = np.abs(a - b).max(axis=2) > 2
    assert 0 < changed.mean() < 1  # the face's region, pasted back into the same generation
    assert np.array_equal(b, _img(again["images"][0]))  # same seed, same pixels
    info = fixed["info"]
    assert '"restore_faces": true' in info and '"face_restoration_model": "GFPGAN"' in info
    assert "Face restoration: GFPGAN, Size: 128x128" in info
    assert "Face restoration" not in plain["info"]
    # CodeFormer (A1111's default restorer), with code_former_weight as its fidelity w
    cf = {w: httpx.post(base_url + "/sdapi/v1/txt2img", timeout=300, json={
        **_GEN, "restore_faces": True,
        "override_settings": {"face_restoration_model": "CodeFormer", "code_former_weight": w}}).json()
        for w in (0.2, 0.9)}
    c2, c9 = _img(cf[0.2]["images"][0]), _img(cf[0.9]["images"][0])
    assert "Face restoration: CodeFormer" in cf[0.2]["info"]
    assert 0 < (np.abs(a - c2).max(axis=2) > 2).mean() < 1 and not np.array_equal(c2, b)
    assert not np.array_equal(c2, c9)  # the weight reaches the network
    r = httpx.post(base_url + "/sdapi/v1/txt2img", json={**_GEN, "restore_faces": True,
                                                         "override_settings": {"face_restoration_model": "Nope"}})
    assert r.status_code == 400 and r.json()["detail"].startswith("override_settings.face_restoration_model:"), r.text
    assert "not a face restorer" in r.text
    listed = httpx.get(base_url + "/sdapi/v1/face-restorers").json()
    assert {x["name"] for x in listed} == {"CodeFormer", "GFPGAN"}, listed


def test_a1111_options_turn_restoration_on_for_later_requests(api: webuiapi.WebUIApi, base_url: str) -> None:
    assert api.get_options()["face_restoration_model"] == "GFPGAN"
    assert api.set_options({"face_restoration": True}) is None
    try:
        r = httpx.post(base_url + "/sdapi/v1/txt2img", json=_GEN, timeout=300).json()
        assert "Face restoration: GFPGAN" in r["info"]
        off = httpx.post(base_url + "/sdapi/v1/txt2img", json={**_GEN, "restore_faces": False}, timeout=300).json()
        assert "Face restoration" not in off["info"]
    finally:
        api.set_options({"face_restoration": False})
    bad = httpx.post(base_url + "/sdapi/v1/options", json={"code_former_weight": 2})
    assert bad.status_code == 400 and "code_former_weight" in bad.text


def test_extras_gfpgan_visibility(base_url: str) -> None:
    im = Image.fromarray(np.random.RandomState(2).randint(0, 256, (96, 128, 3), dtype=np.uint8))
    body = {"image": _b64(im), "upscaler_1": "None"}
    full = httpx.post(base_url + "/sdapi/v1/extra-single-image", json={**body, "gfpgan_visibility": 1}, timeout=300)
    half = httpx.post(base_url + "/sdapi/v1/extra-single-image", json={**body, "gfpgan_visibility": 0.5}, timeout=300)
    assert full.status_code == 200, full.text
    assert "GFPGAN visibility: 1" in full.json()["html_info"]
    a, b, h = np.asarray(im, dtype=np.int32), _img(full.json()["image"]), _img(half.json()["image"])
    assert not np.array_equal(a, b) and np.abs(h - (a + b) / 2).max() <= 1
    cf = {w: httpx.post(base_url + "/sdapi/v1/extra-single-image", timeout=300,
                        json={**body, "codeformer_visibility": 0.5, "codeformer_weight": w}).json() for w in (0.1, 1)}
    assert "CodeFormer visibility: 0.5, CodeFormer weight: 0.1" in cf[0.1]["html_info"], cf[0.1]["html_info"]
    c1, c10 = _img(cf[0.1]["image"]), _img(cf[1]["image"])
    assert not np.array_equal(a, c1) and not np.array_equal(c1, c10)


def test_native_and_modelslab(base_url: str) -> None:
    r = httpx.post(base_url + "/v1/jobs", json={"model": "sd15", "prompt": "x", "steps": 2, "width": 128,
                                                 "height": 128, "seed": 1, "face_restoration": [{"model": "GFPGAN"}]})
    assert r.status_code == 201, r.text
    job = r.json()
    for _ in range(600):
        if job["status"] in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.2)
        job = httpx.get(f"{base_url}/v1/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    img = Image.open(io.BytesIO(httpx.get(job["outputs"][0]["url"]).content))
    assert "Face restoration: GFPGAN" in img.info["parameters"]
    bad = httpx.post(base_url + "/v1/jobs", json={"model": "sd15", "prompt": "x",
                                                   "face_restoration": [{"model": "RestoreFormer"}]})
    assert bad.status_code == 400 and "face_restoration" in bad.text
    data_uri = "data:image/png;base64," + _b64(Image.new("RGB", (64, 48), "gray"))
    sr = httpx.post(base_url + "/api/v3/super_resolution", json={"key": "k", "url": data_uri, "scale": 2,
                                                                 "model_id": "Lanczos", "face_enhance": True},
                    timeout=300).json()
    assert sr["status"] == "success", sr
    out = Image.open(io.BytesIO(httpx.get(sr["output"][0], follow_redirects=True).content))
    assert out.size == (128, 96) and "GFPGAN visibility: 1" in out.info["parameters"]


def test_restoration_is_per_request_inside_a_shared_loop(engine) -> None:  # type: ignore[no-untyped-def]
    """Two requests share one loop (face_restoration is per row); each gets its own images:
    the restored one as when run alone, the other untouched."""
    from sdserve.engine.params import BatchItem, FaceRestoration, GenerationParams

    plain = engine.prepare(GenerationParams(model="sd15", prompt="a face", steps=2, width=128, height=128, seed=9))
    fixed = plain.model_copy(update={"face_restoration": (FaceRestoration(),)})
    both = engine.generate_batch([BatchItem(plain), BatchItem(fixed)])
    alone = engine.generate_batch([BatchItem(fixed)])[0]
    assert both[0].timings["batch_requests"] == 2
    a, b, c = (np.asarray(r.images[0], dtype=np.int32) for r in (both[0], both[1], alone))
    # (a batch of 2 and of 1 may differ by a rounding step in a few pixels, restored or not)
    assert np.abs(b - c).max() <= 1 and np.abs(a - b).max() > 8
    lone = np.asarray(engine.generate_batch([BatchItem(plain)])[0].images[0], dtype=np.int32)
    assert np.abs(a - lone).max() <= 1
