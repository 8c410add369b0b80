"""The AUTOMATIC1111 dialect driven by the ``webuiapi`` package over a real socket.

One uvicorn server (real engine, tiny SD 1.5, 64 px, 2 steps unless a test needs a long
run to watch) serves the module; webuiapi talks to it as it would to a webui started with --api.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image

from tests.conftest import make_app, png_bytes
from tests.integration.live_server import live_server

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
LCM = "@cf/lykon/dreamshaper-8-lcm"


@pytest.fixture(scope="module")
def base_url(settings, engine):  # type: ignore[no-untyped-def]
    with live_server(make_app(settings, engine)) as url:
        yield url


@pytest.fixture(scope="module")
def api(base_url: str) -> webuiapi.WebUIApi:
    u = urlparse(base_url)
    return webuiapi.WebUIApi(host=u.hostname, port=u.port, sampler="Euler a", steps=2)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def _square_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    m = Image.new("L", size, 0)
    m.paste(255, box)
    return m


def test_txt2img(api: webuiapi.WebUIApi) -> None:
    r = api.txt2img(prompt="a cat", seed=42, width=64, height=64, batch_size=2, n_iter=2)
    assert len(r.images) == 4 and all(im.size == (64, 64) for im in r.images)
    assert r.info["all_seeds"] == [42, 43, 44, 45] and r.info["seed"] == 42
    assert r.parameters["seed"] == 42 and r.parameters["batch_size"] == 2  # the request, echoed
    assert "Sampler: Euler a" in r.info["infotexts"][0] and "Seed: 45" in r.info["infotexts"][3]
    assert r.images[0].info["parameters"] == r.info["infotexts"][0]
    again = api.txt2img(prompt="a cat", seed=42, width=64, height=64, batch_size=2, n_iter=2)
    assert all(np.array_equal(_arr(a), _arr(b)) for a, b in zip(again.images, r.images, strict=True))
    alone = api.txt2img(prompt="a cat", seed=44, width=64, height=64)
    # The third image's seed on its own: the same image. Batched CPU kernels may round an
    # ancestral sampler's output differently in the last bit, hence one level of tolerance.
    assert np.abs(_arr(alone.image) - _arr(r.images[2])).max() <= 1
    assert np.abs(_arr(r.images[0]) - _arr(r.images[1])).mean() > 5


def test_random_seed_is_reported(api: webuiapi.WebUIApi) -> None:
    r = api.txt2img(prompt="x", seed=-1, width=64, height=64)
    assert r.parameters["seed"] == -1
    assert r.info["seed"] >= 0 and f"Seed: {r.info['seed']}" in r.info["infotexts"][0]


def test_img2img(api: webuiapi.WebUIApi) -> None:
    init = Image.new("RGB", (96, 80), (30, 120, 200))
    r = api.img2img(images=[init], prompt="a boat", denoising_strength=0.5, width=64, height=64, seed=9)
    assert r.image.size == (64, 64)
    assert "Denoising strength: 0.5" in r.info["infotexts"][0]
    assert r.parameters["init_images"] is None  # include_init_images=False


def test_inpaint_only_masked_repaints_the_mask_and_keeps_the_rest(api: webuiapi.WebUIApi) -> None:
    init = Image.new("RGB", (96, 80), (30, 120, 200))
    box = (32, 24, 64, 56)
    r = api.img2img(images=[init], mask_image=_square_mask(init.size, box), prompt="a window", width=64, height=64,
                    denoising_strength=1.0, seed=5, mask_blur=0)
    out = _arr(r.image)
    assert r.image.size == init.size  # "only masked" pastes the inpainted crop back into the original
    inside, outside = out[box[1]:box[3], box[0]:box[2]], out.copy()
    outside[box[1]:box[3], box[0]:box[2]] = _arr(init)[box[1]:box[3], box[0]:box[2]]
    assert np.array_equal(outside, _arr(init))  # black = keep: untouched to the pixel
    assert np.abs(inside - _arr(init)[box[1]:box[3], box[0]:box[2]]).mean() > 5  # white = repainted
    inv = api.img2img(images=[init], mask_image=_square_mask(init.size, box), prompt="a window", width=64, height=64,
                      denoising_strength=1.0, seed=5, mask_blur=0, inpainting_mask_invert=1, inpaint_full_res=False)
    assert inv.image.size == (64, 64)
    assert "Denoising strength: 1.0" in inv.info["infotexts"][0]


def test_progress_preview_and_interrupt(api: webuiapi.WebUIApi) -> None:
    result: dict[str, object] = {}

    def long_run() -> None:
        result["r"] = api.txt2img(prompt="slow", seed=1, width=64, height=64, steps=200, n_iter=3)

    t = threading.Thread(target=long_run)
    t.start()
    deadline = time.monotonic() + 120
    seen = None
    while time.monotonic() < deadline:
        p = api.get_progress()
        if p["state"]["sampling_step"] >= 6 and p["current_image"]:
            seen = p
            break
        time.sleep(0.05)
    assert seen is not None, "no progress with a preview was reported"
    assert seen["state"]["job_count"] == 3 and seen["state"]["job_no"] == 0
    assert seen["state"]["sampling_steps"] == 200 and 0.01 < seen["progress"] < 0.34
    assert Image.open(io.BytesIO(base64.b64decode(seen["current_image"]))).format == "PNG"
    api.interrupt()
    t.join(60)
    assert not t.is_alive()
    r = result["r"]
    # As A1111 1.10: the batch that was running comes back, decoded from where its loop stood
    # (its sampler returns the latents it has); the later batches never run.
    assert r.info["all_seeds"] == [1] and len(r.images) == 1 and r.images[0].size == (64, 64)
    assert any(w.startswith("interrupted") for w in r.info["warnings"])
    assert api.get_progress()["state"]["job_count"] == 0


def test_skip_goes_on_with_the_next_batch(api: webuiapi.WebUIApi) -> None:
    result: dict[str, object] = {}

    def run() -> None:
        result["r"] = api.txt2img(prompt="skip me", seed=100, width=64, height=64, steps=60, n_iter=2)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and api.get_progress()["state"]["sampling_step"] < 2:
        time.sleep(0.02)
    api.skip()
    t.join(120)
    r = result["r"]
    assert r.info["all_seeds"] == [101]  # batch 0 (seed 100) skipped, batch 1 ran
    assert len(r.images) == 1


def test_listings(api: webuiapi.WebUIApi, engine) -> None:  # type: ignore[no-untyped-def]
    assert api.util_get_model_names() == sorted(s.id for s in engine.catalog)
    samplers = api.util_get_sampler_names()
    assert {"Euler", "Euler a", "DPM++ 2M", "DPM++ SDE", "DDIM", "LMS", "Heun", "LCM"} <= set(samplers)
    assert set(api.util_get_scheduler_names()) == {"automatic", "uniform", "karras", "exponential", "polyexponential",
                                                   "sgm_uniform", "simple", "normal", "ddim", "beta"}  # A1111's names
    assert [u["name"] for u in api.get_upscalers()][:3] == ["None", "Lanczos", "Nearest"]  # then the files
    assert api.get_scripts() == {"txt2img": ["controlnet"], "img2img": ["controlnet", "sd upscale"]}


def test_controlnet_unit_through_webuiapi(api: webuiapi.WebUIApi) -> None:
    # The client's own ControlNetUnit (its defaults: Resize and Fill, thresholds 64/64, res 512).
    hint = Image.new("RGB", (64, 64))
    hint.paste((255, 255, 255), (16, 16, 48, 48))
    unit = webuiapi.ControlNetUnit(image=hint, module="canny", model="tiny-sd15-canny", processor_res=64)
    # A dict of our own: webuiapi writes the units into its mutable default ``alwayson_scripts``,
    # which would carry them into every later call of this module's client (A1111 would run them too).
    r = api.txt2img(prompt="a house", width=64, height=64, steps=2, seed=3, controlnet_units=[unit],
                    override_settings={"sd_model_checkpoint": SD15}, alwayson_scripts={})
    assert len(r.images) == 2  # the image, then the canny map the unit ran on
    assert np.asarray(r.images[1].convert("L"))[32, 32] == 0 and np.asarray(r.images[1]).max() == 255
    assert api.controlnet_version() == 2 and "tiny-sd15-canny" in api.controlnet_model_list()


def test_options_switch_the_checkpoint(api: webuiapi.WebUIApi) -> None:
    assert api.util_get_current_model() == SD15
    try:
        api.util_set_model(LCM)  # webuiapi matches titles, then POSTs /options
        assert api.get_options()["sd_model_checkpoint"] == LCM
        r = api.txt2img(prompt="x", seed=1, width=64, height=64, sampler_name="LCM", cfg_scale=1.5)
        assert r.info["sd_model_name"] == LCM and f"Model: {LCM}" in r.info["infotexts"][0]
        r = api.txt2img(prompt="x", seed=1, width=64, height=64, override_settings={"sd_model_checkpoint": "sd15"})
        assert r.info["sd_model_name"] == SD15  # a per-request override leaves the option alone
        assert api.get_options()["sd_model_checkpoint"] == LCM
    finally:
        api.set_options({"sd_model_checkpoint": SD15})
    res = api.set_options({"sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors [6ce0161689]"})
    assert res["error"] == "HTTPException" and res["detail"].startswith("sd_model_checkpoint: ")
    assert api.get_options()["sd_model_checkpoint"] == SD15


def test_png_info_reads_back_what_txt2img_wrote(api: webuiapi.WebUIApi) -> None:
    r = api.txt2img(prompt="a lamp", negative_prompt="dark", seed=77, width=64, height=64)
    info = api.png_info(r.image)
    assert info.info == r.info["infotexts"][0]
    assert info.parameters["Seed"] == "77" and info.parameters["Negative prompt"] == "dark"


def test_jpeg_samples_format(api: webuiapi.WebUIApi, base_url: str) -> None:
    r = api.txt2img(prompt="x", seed=2, width=64, height=64, override_settings={"samples_format": "jpg"})
    assert r.image.format == "JPEG"
    # webuiapi.png_info re-encodes as PNG, dropping EXIF; send the JPEG's own bytes.
    info = httpx.post(f"{base_url}/sdapi/v1/png-info", json={"image": r.json["images"][0]}).json()
    assert info["parameters"]["Seed"] == "2" and info["info"] == r.info["infotexts"][0]


def test_bad_input_gets_a1111_error_bodies(api: webuiapi.WebUIApi, base_url: str) -> None:
    with pytest.raises(RuntimeError) as e:
        api.txt2img(prompt="x", sampler_name="Euler z", width=64, height=64)
    status, text = e.value.args
    assert status == 400 and "sampler_name" in text and "DPM++ 2M" in text
    cases = [
        ("/sdapi/v1/txt2img", {"steps": "many"}, 400, "steps"),
        ("/sdapi/v1/txt2img", {"width": 4100}, 400, "width"),
        ("/sdapi/v1/txt2img", {"cfg_scale": 99}, 400, "cfg_scale"),
        ("/sdapi/v1/txt2img", {"enable_hr": True, "hr_upscaler": "Bogus", "width": 64, "height": 64}, 400,
         "hr_upscaler"),
        ("/sdapi/v1/txt2img", {"script_name": "x/y/z plot"}, 422, "script_name"),
        ("/sdapi/v1/img2img", {"prompt": "x"}, 404, "init_images"),
        ("/sdapi/v1/img2img", {"init_images": ["@@@"]}, 400, "init_images[0]"),
        ("/sdapi/v1/img2img", {"init_images": [base64.b64encode(b"GIF89a junk").decode()]}, 400, "init_images[0]"),
        ("/sdapi/v1/png-info", {"image": "bm90IGFuIGltYWdl"}, 400, "image"),
        ("/sdapi/v1/options", [1, 2], 400, "body"),
    ]
    for path, body, status, field in cases:
        r = httpx.post(base_url + path, json=body, timeout=60)
        assert r.status_code == status, (path, body, r.text)
        err = r.json()
        assert set(err) == {"error", "detail", "body", "errors"}
        assert field in err["detail"] and err["errors"].startswith(f"{status}: ")
    assert httpx.get(base_url + "/healthz").status_code == 200  # still serving


def test_basic_auth_with_api_keys(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with live_server(make_app(settings, engine, api_keys=["sk-right"])) as url:
        u = urlparse(url)
        ok = webuiapi.WebUIApi(host=u.hostname, port=u.port, username="me", password="sk-right")
        assert ok.get_options()["sd_model_checkpoint"] == SD15
        bad = webuiapi.WebUIApi(host=u.hostname, port=u.port, username="me", password="sk-wrong")
        with pytest.raises(RuntimeError) as e:
            bad.txt2img(prompt="x", width=64, height=64)
        assert e.value.args[0] == 401
        assert httpx.get(url + "/sdapi/v1/options", headers={"Authorization": "Bearer sk-right"}).status_code == 200


# These dialects read A1111 prompt syntax: a long prompt is read in 75-token chunks (nothing
# dropped, no warning); an unclosed bracket is read as A1111 reads it, with a warning.
LONG = "a (cat in a hat, " + " ".join(f"word{i}" for i in range(120))


def test_a_long_prompt_warns_in_info_and_header_a_short_one_does_not(api: webuiapi.WebUIApi, base_url: str) -> None:
    r = api.txt2img(prompt=LONG, seed=7, width=64, height=64, n_iter=2)
    assert len(r.images) == 2 and r.info["all_seeds"] == [7, 8]  # the usual info, unchanged
    warnings = r.info["warnings"]
    # Once, though both jobs of the request read the same prompt.
    assert len(warnings) == 1 and warnings[0].startswith("prompt: ") and "never closed" in warnings[0]
    init = base64.b64encode(png_bytes()).decode()
    raw = httpx.post(f"{base_url}/sdapi/v1/img2img", timeout=60, json={
        "prompt": LONG, "init_images": [init], "steps": 2, "width": 64, "height": 64, "seed": 7})
    assert raw.status_code == 200, raw.text
    assert raw.headers["x-sdserve-warning"] == json.loads(raw.json()["info"])["warnings"][0] == warnings[0]
    short = httpx.post(f"{base_url}/sdapi/v1/txt2img", timeout=60,
                       json={"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 7})
    assert short.status_code == 200, short.text
    assert "warnings" not in json.loads(short.json()["info"]) and "x-sdserve-warning" not in short.headers


def test_options_list_every_a1111_setting_and_report_what_is_not_applied(api: webuiapi.WebUIApi,
                                                                         base_url: str) -> None:
    opts = api.get_options()
    assert opts["send_seed"] is True and opts["send_size"] is True and opts["CLIP_stop_at_last_layers"] == 1
    assert len(opts) > 250 and opts["sd_model_checkpoint"] == SD15
    assert api.set_options(opts) is None  # posting GET's dict back changes nothing and applies all
    res = api.set_options({"CLIP_stop_at_last_layers": 2, "send_seed": False, "live_previews_enable": False})
    assert set(res["not_applied"]) == {"send_seed"}
    after = api.get_options()
    assert after["CLIP_stop_at_last_layers"] == 2 and after["send_seed"] is True  # the values in effect
    try:
        assert after["live_previews_enable"] is False
        r = api.txt2img(prompt="x", seed=3, width=64, height=64, override_settings={"sd_vae": "Automatic"})
        assert "warnings" not in r.info and r.info["clip_skip"] == 2 and "Clip skip: 2" in r.info["infotexts"][0]
        refused = httpx.post(base_url + "/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64,
                                                                     "height": 64, "override_settings": {
                                                                         "send_seed": False}})
        assert refused.status_code == 400 and "override_settings.send_seed" in refused.json()["detail"]
    finally:
        api.set_options({"live_previews_enable": True, "CLIP_stop_at_last_layers": 1})
    bad = httpx.post(base_url + "/sdapi/v1/options", json={"live_previews_enable": "sure", "send_seed": False})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("live_previews_enable: ")


def test_a_side_off_the_grid_is_rounded_down_like_a1111(api: webuiapi.WebUIApi) -> None:
    r = api.txt2img(prompt="x", seed=5, width=71, height=64)  # Open WebUI sends what the user typed
    assert r.image.size == (64, 64) and r.info["width"] == 64 and "Size: 64x64" in r.info["infotexts"][0]


def test_memory_extensions_and_unknown_routes(api: webuiapi.WebUIApi, base_url: str) -> None:
    mem = api.get_memory()
    ram = mem["ram"]
    assert ram["total"] > ram["used"] > 0 and ram["free"] == ram["total"] - ram["used"]
    assert mem["cuda"] == {"error": "unavailable"}  # the tests run on the CPU
    assert httpx.get(base_url + "/sdapi/v1/extensions").json() == []
    for method in ("GET", "POST"):
        r = httpx.request(method, base_url + "/sdapi/v1/no-such-route", json={})
        assert r.status_code == 404 and r.json()["errors"].startswith("404: "), (method, r.text)
    assert httpx.post(base_url + "/sdapi/v1/upscalers", json={}).status_code == 405  # a known route, GET only


def test_live_previews_can_be_switched_off_per_request(api: webuiapi.WebUIApi) -> None:
    result: dict[str, object] = {}

    def run() -> None:
        result["r"] = api.txt2img(prompt="no previews", seed=2, width=64, height=64, steps=200,
                                  override_settings={"live_previews_enable": False})

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 120
    seen = None
    while time.monotonic() < deadline and seen is None:
        p = api.get_progress()
        seen = p if p["state"]["sampling_step"] >= 11 else None  # previews come every 5 steps
        time.sleep(0.05)
    api.interrupt()
    t.join(60)
    assert seen is not None and seen["current_image"] is None
    # applied, so nothing to report but the interrupt itself
    assert [w for w in result["r"].info.get("warnings", []) if not w.startswith("interrupted")] == []
