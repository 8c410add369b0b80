"""ControlNet through the dialects on the real engine (tiny ControlNets of demo mode):
A1111's ControlNet extension (alwayson_scripts units with its defaults, /controlnet/*),
ModelsLab's /controlnet endpoint and controlnet_* fields, native ``control`` units; bad
input is a 4xx in each dialect's own body naming the field."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import png_bytes, png_of

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _hint() -> bytes:
    img = Image.new("RGB", (64, 64))
    ImageDraw.Draw(img).rectangle((16, 16, 48, 48), fill=(255, 255, 255))
    return png_of(img)


def _px(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def _a1111(client, units: list[dict[str, Any]], **kw) -> Any:  # type: ignore[no-untyped-def]
    body = {"prompt": "a house", "width": 64, "height": 64, "steps": 2, "seed": 7,
            "override_settings": {"sd_model_checkpoint": SD15},
            "alwayson_scripts": {"ControlNet": {"args": units}}, **kw}
    return client.post("/sdapi/v1/txt2img", json=body)


def test_a1111_unit_with_the_extensions_defaults(client) -> None:  # type: ignore[no-untyped-def]
    plain = _a1111(client, [])
    r = _a1111(client, [{"image": _b64(_hint()), "model": "tiny-sd15-canny [0123abcd]"}])
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert len(images) == 1  # module "none": no detected map is appended
    assert np.abs(_px(images[0]) - _px(plain.json()["images"][0])).mean() > 0.2
    # A disabled unit is skipped, as the extension does.
    off = _a1111(client, [{"image": _b64(_hint()), "model": "tiny-sd15-canny", "enabled": False}])
    assert np.array_equal(_px(off.json()["images"][0]), _px(plain.json()["images"][0]))


def test_a1111_preprocessor_map_is_appended_and_detect_returns_it(client) -> None:  # type: ignore[no-untyped-def]
    unit = {"image": _b64(_hint()), "model": "tiny-sd15-canny", "module": "canny", "threshold_a": 50,
            "threshold_b": 100, "processor_res": 64, "resize_mode": "Just Resize",
            "control_mode": "ControlNet is more important"}
    r = _a1111(client, [unit])
    assert r.status_code == 200, r.text
    _, detected = r.json()["images"]
    edges = _px(detected)
    assert edges.shape == (64, 64, 3) and edges.max() == 255 and edges[32, 32].max() == 0  # an outline
    d = client.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": [_b64(_hint())],
                                                "controlnet_threshold_a": 50, "controlnet_threshold_b": 100,
                                                "controlnet_processor_res": 64})
    assert d.status_code == 200 and d.json()["info"] == "Success"
    assert np.array_equal(_px(d.json()["images"][0]), edges)


def test_a1111_controlnet_listings(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/controlnet/version").json() == {"version": 2}
    models = client.get("/controlnet/model_list").json()["model_list"]
    assert {"tiny-sd15-canny", "tiny-sd15-canny-single", "tiny-sdxl-canny"} <= set(models)
    modules = client.get("/controlnet/module_list").json()
    assert "canny" in modules["module_list"] and modules["module_detail"]["canny"]["sliders"]
    assert "controlnet" in client.get("/sdapi/v1/scripts").json()["txt2img"]


@pytest.mark.parametrize(("unit", "status", "field"), [
    ({"image": _b64(b"not an image"), "model": "tiny-sd15-canny"}, 400, "args[0].image"),
    ({"image": _b64(png_bytes()), "model": "tiny-sdxl-canny"}, 400, "args[0].model"),
    ({"image": _b64(png_bytes()), "model": "nope"}, 400, "args[0].model"),
    ({"image": _b64(png_bytes()), "model": "tiny-sd15-canny", "module": "depth_zoe"}, 400, "args[0].module"),
    ({"image": _b64(png_bytes()), "model": "tiny-sd15-canny", "module": "sharpen"}, 400, "args[0].module"),
    ({"image": _b64(png_bytes()), "model": "tiny-sd15-canny", "control_mode": "Loud"}, 400, "args[0].control_mode"),
    ({"model": "tiny-sd15-canny"}, 400, "args[0].image"),  # txt2img: no init image to fall back on
])
def test_a1111_bad_units(client, unit: dict, status: int, field: str) -> None:  # type: ignore[no-untyped-def]
    r = _a1111(client, [unit])
    assert r.status_code == status, r.text
    assert r.json()["detail"].startswith(f"alwayson_scripts.controlnet.{field}"), r.text


def test_a1111_too_many_units_and_other_scripts(client) -> None:  # type: ignore[no-untyped-def]
    unit = {"image": _b64(png_bytes()), "model": "tiny-sd15-canny"}
    r = _a1111(client, [unit] * 5)
    assert r.status_code == 400 and r.json()["detail"].startswith("alwayson_scripts.controlnet.args:"), r.text
    r = _a1111(client, [], alwayson_scripts={"ADetailer": {"args": []}})
    assert r.status_code == 422 and "ADetailer" in r.json()["detail"], r.text
    r = client.post("/controlnet/detect", json={"controlnet_module": "openpose_hand", "controlnet_input_images": ["x"]})
    assert r.status_code == 400 and r.json()["detail"].startswith("controlnet_module"), r.text


def _modelslab(client, path: str, **kw) -> Any:  # type: ignore[no-untyped-def]
    """The reply, fetched until done when the wait window ran out first (a busy machine)."""
    body = {"model_id": SD15, "prompt": "a house", "width": "64", "height": "64", "num_inference_steps": "2",
            "seed": "7", "base64": "yes", **kw}
    r = client.post(path, json=body)
    for _ in range(600):
        if r.status_code != 200 or r.json()["status"] != "processing":
            return r
        time.sleep(0.5)
        r = client.post("/api/v3/fetch/" + r.json()["id"], json={})
    return r


def test_modelslab_controlnet_endpoint(client) -> None:  # type: ignore[no-untyped-def]
    hint = "data:image/png;base64," + _b64(_hint())
    r = _modelslab(client, "/api/v5/controlnet", controlnet_model="tiny-sd15-canny", controlnet_type="canny",
                   auto_hint="yes", guess_mode="no", init_image=hint, controlnet_conditioning_scale="0.8")
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    plain = _modelslab(client, "/api/v3/text2img")
    assert np.abs(_px(r.json()["output"][0]) - _px(plain.json()["output"][0])).mean() > 0.2
    # Two models as comma lists; the v6 text2img route reads the same fields.
    r2 = _modelslab(client, "/api/v6/images/text2img", controlnet_model="tiny-sd15-canny,tiny-sd15-canny-single",
                    controlnet_conditioning_scale="1,0.5", control_image=hint)
    assert r2.status_code == 200 and r2.json()["status"] == "success", r2.text


@pytest.mark.parametrize(("fields", "field"), [
    (dict(controlnet_model="tiny-sdxl-canny"), "controlnet_model"),
    (dict(controlnet_model="tiny-sd15-canny", controlnet_type="normal", auto_hint="yes"), "controlnet_type"),
    (dict(controlnet_model="tiny-sd15-canny", controlnet_conditioning_scale="1,2,3"), "controlnet_conditioning_scale"),
    (dict(controlnet_model="tiny-sd15-canny", init_image="data:image/png;base64," + _b64(b"junk")), "control_image"),
    (dict(controlnet_type="canny"), "controlnet_type"),
])
def test_modelslab_bad_controlnet_fields(client, fields: dict, field: str) -> None:  # type: ignore[no-untyped-def]
    fields.setdefault("init_image", "data:image/png;base64," + _b64(_hint()))
    r = _modelslab(client, "/api/v5/controlnet", **fields)
    assert r.status_code == 400 and r.json()["status"] == "error", r.text
    assert r.json()["message"].startswith(field), r.text


def test_native_control_units(client) -> None:  # type: ignore[no-untyped-def]
    body = {"model": SD15, "prompt": "a house", "width": 64, "height": 64, "steps": 2, "seed": 7,
            "control": [{"model": "tiny-sd15-canny-single", "preprocessor": "canny", "image": _b64(_hint())}]}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code in (200, 201, 202), r.text
    job = r.json()
    for _ in range(600):
        job = client.get(f"/v1/jobs/{job['id']}").json()
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert job["status"] == "succeeded", job
    assert job["params"]["control"][0]["model"] == "tiny-sd15-canny-single"
    bad = client.post("/v1/jobs", json={**body, "control": [{**body["control"][0], "image": _b64(b"junk")}]})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "control[0].image", bad.text


def test_ip_adapter_in_every_dialect(client) -> None:  # type: ignore[no-untyped-def]
    red = _b64(png_bytes((80, 60), (255, 0, 0)))
    # A1111: a ControlNet unit with an ip-adapter module.
    a = _a1111(client, [{"image": red, "module": "ip-adapter_clip_sd15", "model": "tiny-ip-adapter_sd15",
                         "weight": 0.8}])
    assert a.status_code == 200 and len(a.json()["images"]) == 1, a.text
    # ModelsLab: ip_adapter_id / ip_adapter_image / ip_adapter_scale, same request -> same pixels.
    m = _modelslab(client, "/api/v3/text2img", ip_adapter_id="tiny-ip-adapter_sd15",
                   ip_adapter_image="data:image/png;base64," + red, ip_adapter_scale="0.8")
    assert m.status_code == 200 and m.json()["status"] == "success", m.text
    bad = _modelslab(client, "/api/v3/text2img", ip_adapter_id="tiny-ip-adapter_sdxl",
                     ip_adapter_image="data:image/png;base64," + red)
    assert bad.status_code == 400 and bad.json()["message"].startswith("ip_adapter_id"), bad.text
    # Native: the ip_adapter object.
    body = {"model": SD15, "prompt": "a house", "width": 64, "height": 64, "steps": 2, "seed": 7,
            "ip_adapter": {"model": "nope", "image": red}}
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 400 and r.json()["error"]["field"] == "ip_adapter.model", r.text
