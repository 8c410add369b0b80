"""ModelsLab / stablediffusionapi dialect on the real engine (tiny models, 64 px, 2 steps):
success within the wait window, processing -> fetch -> success, future links, base64, init
images by data URI and by (loopback) URL through the SSRF-safe fetcher, webhooks with
track_id, system_load, key in the body, the bad-input catalogue, same pixels as Workers AI,
and ModelsLab's own SDK (modelslab_py) over a real socket."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_app, mask_bytes, png_bytes
from tests.integration.live_server import live_server
from tests.jobs_support import job_client

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
FAST: dict[str, Any] = {"model_id": SD15, "prompt": "a lighthouse", "width": "64", "height": "64",
                        "num_inference_steps": "2", "enhance_prompt": "no"}


def _px(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


@contextmanager
def loopback_server(files: dict[str, bytes] | None = None) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Serves ``files`` by path on 127.0.0.1 and records POSTed JSON; yields (base URL, posts)."""
    posts: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            data = (files or {}).get(self.path)
            self.send_response(200 if data is not None else 404)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            posts.append({"path": self.path, "json": json.loads(body)})
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posts
    finally:
        server.shutdown()
        server.server_close()


def _until_success(client, fetch_path: str, body: dict[str, Any] | None = None, timeout: float = 120) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = client.post(fetch_path, json=body or {})
        assert r.status_code == 200, r.text
        if r.json()["status"] != "processing":
            return r.json()  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError("the job did not finish")


def test_text2img_within_the_window_matches_workers_ai(client) -> None:  # type: ignore[no-untyped-def]
    # Workers AI's minimum side is 256: compare there, one request each.
    body = {**FAST, "width": "256", "height": "256", "seed": "1234", "guidance_scale": 7.5}
    r = client.post("/api/v3/text2img", json={**body, "base64": "yes"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "success" and isinstance(out["generationTime"], float)
    ml = _px(base64.b64decode(out["output"][0]))
    m = out["meta"]
    assert (m["seed"], m["steps"], m["W"], m["H"], m["n_samples"], m["guidance_scale"], m["prompt"]) == (
        1234, 2, 256, 256, 1, 7.5, "a lighthouse")
    wa = client.post(f"/ai/run/{SD15}", json={"prompt": "a lighthouse", "width": 256, "height": 256,
                                              "num_steps": 2, "seed": 1234, "guidance": 7.5})
    assert wa.status_code == 200, wa.text
    assert ml.shape == (256, 256, 3) and np.array_equal(ml, _px(wa.content))
    # The v6 route gives the same image, as a URL this time.
    r6 = client.post("/api/v6/images/text2img", json={**body, "width": 256, "height": 256, "seed": 1234})
    assert r6.status_code == 200 and r6.json()["status"] == "success", r6.text
    img = client.get(_path(r6.json()["output"][0]))
    assert img.status_code == 200 and np.array_equal(_px(img.content), ml)


def test_seed_null_is_random_and_meta_says_which(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v3/text2img", json={**FAST, "seed": None, "samples": "2", "enhance_prompt": "yes"})
    assert r.status_code == 200, r.text
    m = r.json()["meta"]
    assert isinstance(m["seed"], int) and m["seeds"] == [m["seed"], m["seed"] + 1]
    assert len(r.json()["output"]) == 2
    # enhance_prompt "yes": the server's (tiny, demo) enhancer extends the prompt.
    assert m["prompt"].startswith("a lighthouse ") and m["prompt"] != "a lighthouse" and m["enhance_prompt"] == "yes"


def test_processing_then_fetch_then_success(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with job_client(settings, engine, tmp_path, modelslab_wait_s=0) as c:
        r = c.post("/api/v6/images/text2img", json={**FAST, "seed": 77, "track_id": "abc"})
        assert r.status_code == 200, r.text
        p = r.json()
        assert p["status"] == "processing" and p["output"] == []
        assert p["messege"] == p["message"] and isinstance(p["eta"], float) and p["eta"] > 0
        assert p["fetch_result"] == f"http://testserver/api/v6/images/fetch/{p['id']}"
        assert p["future_links"] == [f"http://testserver/api/v3/outputs/{p['id']}/0.png"]
        assert p["meta"]["seed"] == 77 and p["meta"]["track_id"] == "abc"
        done = _until_success(c, _path(p["fetch_result"]))
        assert done["status"] == "success" and done["id"] == p["id"] and done["meta"]["seed"] == 77
        img = c.get(_path(done["output"][0]))
        assert img.status_code == 200
        # The future link now leads to the same image.
        link = c.get(_path(p["future_links"][0]), follow_redirects=False)
        assert link.status_code == 307 and link.headers["location"] == done["output"][0]
        assert c.get(_path(p["future_links"][0])).content == img.content
        # Same job through the v3 fetch route; an unknown id is a 404 in ModelsLab's shape.
        assert c.post(f"/api/v3/fetch/{p['id']}", json={}).json()["output"] == done["output"]
        missing = c.post("/api/v3/fetch/nope", json={})
        assert missing.status_code == 404 and missing.json()["status"] == "error"
        gone = c.get("/api/v3/outputs/nope/0.png")
        assert gone.status_code == 404 and gone.json()["status"] == "error"


def test_instant_response_and_base64_fetch(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with job_client(settings, engine, tmp_path) as c:
        r = c.post("/api/v6/realtime/text2img", json={**FAST, "seed": 5, "instant_response": True, "base64": True})
        assert r.status_code == 200 and r.json()["status"] == "processing", r.text
        done = _until_success(c, _path(r.json()["fetch_result"]))
        assert _px(base64.b64decode(done["output"][0])).shape == (64, 64, 3)


def test_init_image_by_data_uri_and_loopback_url(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    init, mask = png_bytes((64, 64), (30, 120, 200)), mask_bytes()
    with loopback_server({"/init.png": init, "/mask.png": mask}) as (base, _), \
            job_client(settings, engine, tmp_path, allow_private_urls=True) as c:
        body = {**FAST, "seed": 11, "strength": 0.5, "base64": "yes"}
        by_url = c.post("/api/v3/img2img", json={**body, "init_image": f"{base}/init.png"})
        by_uri = c.post("/api/v3/img2img", json={**body, "init_image": _data_uri(init)})
        assert by_url.status_code == 200 and by_uri.status_code == 200, (by_url.text, by_uri.text)
        assert by_url.json()["meta"]["init_image"] == f"{base}/init.png"
        a, b = (_px(base64.b64decode(r.json()["output"][0])) for r in (by_url, by_uri))
        assert np.array_equal(a, b)
        inp = c.post("/api/v3/inpaint", json={**body, "init_image": f"{base}/init.png",
                                              "mask_image": f"{base}/mask.png"})
        assert inp.status_code == 200 and inp.json()["status"] == "success", inp.text
        kept = _px(base64.b64decode(inp.json()["output"][0]))
        assert not np.array_equal(kept, a)
        missing = c.post("/api/v3/img2img", json={**body, "init_image": f"{base}/nothing.png"})
        assert missing.status_code == 400 and "init_image" in missing.json()["message"]


def test_private_url_refused_when_not_allowed(client) -> None:  # type: ignore[no-untyped-def]
    with loopback_server({"/init.png": png_bytes()}) as (base, _):
        r = client.post("/api/v3/img2img", json={**FAST, "init_image": f"{base}/init.png"})
        assert r.status_code == 400, r.text
        assert r.json()["status"] == "error" and r.json()["message"].startswith("init_image")
        r = client.post("/api/v3/inpaint", json={**FAST, "init_image": _data_uri(png_bytes()),
                                                 "mask_image": "http://169.254.169.254/latest/mask.png"})
        assert r.status_code == 400 and r.json()["message"].startswith("mask_image"), r.text


def test_webhook_echoes_track_id(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with loopback_server() as (base, posts), \
            job_client(settings, engine, tmp_path, allow_private_urls=True, modelslab_wait_s=0) as c:
        r = c.post("/api/v3/text2img", json={**FAST, "seed": 3, "webhook": f"{base}/hook", "track_id": 42})
        assert r.status_code == 200 and r.json()["status"] == "processing", r.text
        deadline = time.time() + 60
        while not posts and time.time() < deadline:
            time.sleep(0.05)
        assert posts, "no webhook arrived"
        hook = posts[0]["json"]
        assert (hook["status"], hook["id"], hook["track_id"], hook["meta"]["seed"]) == ("success", r.json()["id"],
                                                                                         "42", 3)
        done = _until_success(c, f"/api/v3/fetch/{r.json()['id']}")
        assert hook["output"] == done["output"]
    # A webhook the fetcher would refuse is a 400 at once, not a silent loss later.
    with job_client(settings, engine, tmp_path / "b") as c:
        r = c.post("/api/v3/text2img", json={**FAST, "webhook": "http://127.0.0.1:9/hook"})
        assert r.status_code == 400 and r.json()["message"].startswith("webhook"), r.text


def test_webhook_and_reply_flags_survive_a_restart(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from sdserve.api.app import build_app
    from tests.jobs_support import make_service

    opts = {"allow_private_urls": True, "modelslab_wait_s": 0}
    with loopback_server() as (base, posts):
        # A server that accepts the job and dies before running it (its worker never starts).
        s, service = make_service(settings, engine, tmp_path, **opts)
        r = TestClient(build_app(s, service)).post("/api/v3/text2img", json={
            **FAST, "seed": 5, "webhook": f"{base}/hook", "track_id": "t-7", "base64": "yes"})
        assert r.status_code == 200 and r.json()["status"] == "processing", r.text
        job_id = r.json()["id"]
        with job_client(settings, engine, tmp_path, **opts) as c:  # the restarted server
            done = _until_success(c, f"/api/v3/fetch/{job_id}")
            assert base64.b64decode(done["output"][0])[:8] == b"\x89PNG\r\n\x1a\n"  # base64 flag kept
            deadline = time.time() + 60
            while not posts and time.time() < deadline:
                time.sleep(0.05)
    assert posts, "the webhook of a job accepted before the restart never arrived"
    hook = posts[0]["json"]
    assert (hook["status"], hook["id"], hook["track_id"], hook["meta"]["seed"]) == ("success", job_id, "t-7", 5)


def test_system_load_reports_the_real_queue(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with job_client(settings, engine, tmp_path, modelslab_wait_s=0) as c:
        idle = c.post("/api/v3/system_load", json={"key": ""}).json()
        assert idle == {"queue_num": 0, "queue_time": 0.0, "status": "ok"}
        # Different sizes cannot share a denoising loop, so they wait in line.
        ids = [c.post("/api/v3/text2img", json={**FAST, "width": w, "height": w}).json()["id"] for w in (64, 72, 80)]
        busy = c.post("/api/v3/system_load", json={}).json()
        assert busy["queue_num"] >= 1 and busy["queue_time"] > 0
        for i in ids:
            _until_success(c, f"/api/v3/fetch/{i}")
        assert c.post("/api/v3/system_load", json={}).json()["queue_num"] == 0


def test_key_in_the_body(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(make_app(settings, engine, api_keys=["sekret"])) as c:
        for body in ({}, {"key": "wrong"}, {"key": "wrong", "width": "not a number"}):
            r = c.post("/api/v3/text2img", json=body)
            assert r.status_code == 401 and r.json()["message"] == "Invalid Api Key", r.text
            assert "key" in r.json()["tip"]
        assert c.post("/api/v3/system_load", json={"key": "sekret"}).status_code == 200
        assert c.post("/api/v3/system_load", json={}, headers={"Authorization": "Bearer sekret"}).status_code == 200
        r = c.post("/api/v3/text2img", json={**FAST, "key": "sekret", "samples": 5})
        assert r.status_code == 400 and "samples" in r.json()["message"]


@pytest.mark.parametrize(("body", "field"), [
    ({"width": "abc"}, "width"),
    ({"num_inference_steps": "twenty"}, "num_inference_steps"),
    ({"guidance_scale": "high"}, "guidance_scale"),
    ({"samples": 5}, "samples"),
    ({"width": 2000}, "width"),
    ({"height": "1032"}, "height"),
    ({"width": "100"}, "width"),  # not a multiple of 8: the engine's rule, still named
    ({"guidance_scale": 25}, "guidance_scale"),
    ({"seed": "x"}, "seed"),
    ({"base64": "perhaps"}, "base64"),
    ({"safety_checker_type": "sepia"}, "safety_checker_type"),
    ({"prompt": None}, "prompt"),
    ({"model_id": "no-such-model"}, "model_id"),
    ({"scheduler": "Bogus"}, "scheduler"),
])
def test_bad_input_catalogue(client, body, field) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v3/text2img", json={**FAST, **body})
    assert r.status_code == 400, r.text
    out = r.json()
    assert out["status"] == "error" and out["message"].startswith(field), out


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v3/img2img", {}, "init_image"),
    ("/api/v3/img2img", {"init_image": "ftp://example.com/a.png"}, "init_image"),
    ("/api/v3/img2img", {"init_image": _data_uri(b"not a png")}, "init_image"),
    ("/api/v3/img2img", {"init_image": _data_uri(png_bytes()), "strength": 1.5}, "strength"),
    ("/api/v3/inpaint", {"init_image": _data_uri(png_bytes())}, "mask_image"),
])
def test_bad_image_input(client, path, body, field) -> None:  # type: ignore[no-untyped-def]
    r = client.post(path, json={**FAST, **body})
    assert r.status_code == 400 and r.json()["message"].startswith(field), r.text


def test_bad_bodies_and_the_server_keeps_serving(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v3/text2img", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json() == {"status": "error", "message": "body: is not valid JSON "
                                                 "(send Content-Type: application/json)"}
    r = client.post("/api/v3/text2img", json=["prompt"])
    assert r.status_code == 400 and r.json()["message"].startswith("body")
    r = client.get("/api/v3/text2img")
    assert r.status_code == 405 and r.json()["status"] == "error"
    assert client.post("/api/v3/text2img", json=FAST).json()["status"] == "success"


def test_modelslab_py_sdk_against_a_live_server(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from modelslab_py.core.apis.community import Community
    from modelslab_py.core.client import Client
    from modelslab_py.schemas.community import Image2Image, Inpainting, Text2Image

    from sdserve.api.app import build_app
    from tests.jobs_support import make_service

    s, service = make_service(settings, engine, tmp_path, api_keys=["sdk-key"], modelslab_wait_s=0)
    with live_server(build_app(s, service)) as url:
        client = Client(api_key="sdk-key", fetch_retry=600, fetch_timeout=0.1)  # type: ignore[arg-type]
        client.base_url = url + "/api/"  # the SDK's documented host is https://modelslab.com/api/
        api = Community(client)
        first = api.text_to_image(Text2Image(prompt="a lighthouse", model_id=SD15, width=64, height=64,
                                             samples=1, num_inference_steps=2, seed=21, enhance_prompt="no"))
        assert first["status"] == "processing", first
        done = api.fetch(first["id"])
        assert done["status"] == "success" and done["meta"]["seed"] == 21, done
        init = _data_uri(png_bytes())
        i2i = api.fetch(api.image_to_image(Image2Image(prompt="a lighthouse", model_id=SD15, init_image=init,
                                                       num_inference_steps=2, seed=22, strength=0.5))["id"])
        assert i2i["status"] == "success" and i2i["meta"]["strength"] == 0.5, i2i
        inp = api.fetch(api.inpainting(Inpainting(prompt="a lighthouse", model_id=SD15, init_image=init,
                                                  mask_image=_data_uri(mask_bytes()), num_inference_steps=2,
                                                  seed=23, strength=0.5))["id"])
        assert inp["status"] == "success", inp
        import httpx

        assert _px(httpx.get(inp["output"][0]).content).shape == (64, 64, 3)
        # The SDK raises on a non-200 with ModelsLab's error body in the message.
        with pytest.raises(Exception, match="samples"):
            api.text_to_image(Text2Image(prompt="x", samples=5))


# These dialects read A1111 prompt syntax: a long prompt is read in 75-token chunks (nothing
# dropped, no warning); an unclosed bracket is read as A1111 reads it, with a warning.
LONG = "a (cat in a hat, " + " ".join(f"word{i}" for i in range(120))


def test_a_long_prompt_warns_in_the_reply_and_header_a_short_one_does_not(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v3/text2img", json={**FAST, "prompt": LONG, "seed": 8})
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    warnings = r.json()["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("prompt: ") and "never closed" in warnings[0]
    assert r.headers["x-sdserve-warning"] == warnings[0]
    assert r.json()["meta"]["prompt"] == LONG  # meta still echoes what was sent
    short = client.post("/api/v3/text2img", json={**FAST, "seed": 8})
    assert short.status_code == 200 and short.json()["status"] == "success", short.text
    assert "warnings" not in short.json() and "x-sdserve-warning" not in short.headers


def test_long_prompt_warnings_on_fetch_and_in_the_webhook_through_the_sdk(settings, engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import httpx
    from modelslab_py.core.apis.community import Community
    from modelslab_py.core.client import Client
    from modelslab_py.schemas.community import Text2Image

    from sdserve.api.app import build_app
    from tests.jobs_support import make_service

    s, service = make_service(settings, engine, tmp_path, api_keys=["sdk-key"], modelslab_wait_s=0,
                              allow_private_urls=True)
    with loopback_server() as (hooks, posts), live_server(build_app(s, service)) as url:
        client = Client(api_key="sdk-key", fetch_retry=600, fetch_timeout=0.1)  # type: ignore[arg-type]
        client.base_url = url + "/api/"
        api = Community(client)
        fields: dict[str, Any] = {"model_id": SD15, "width": 64, "height": 64, "samples": 1,
                                  "num_inference_steps": 2, "seed": 31, "enhance_prompt": "no"}
        first = api.text_to_image(Text2Image(prompt=LONG, webhook=f"{hooks}/hook", track_id="long", **fields))
        assert first["status"] == "processing" and "warnings" not in first, first  # not read yet
        done = api.fetch(first["id"])
        assert done["status"] == "success", done
        warnings = done["warnings"]
        assert len(warnings) == 1 and warnings[0].startswith("prompt: "), done
        fetched = httpx.post(f"{url}/api/v3/fetch/{first['id']}", json={"key": "sdk-key"}, timeout=60)
        assert fetched.json()["warnings"] == warnings and fetched.headers["x-sdserve-warning"] == warnings[0]
        deadline = time.time() + 60
        while not posts and time.time() < deadline:
            time.sleep(0.05)
        assert posts, "no webhook arrived"
        hook = posts[0]["json"]
        assert (hook["status"], hook["track_id"], hook["warnings"]) == ("success", "long", warnings)
        plain = api.fetch(api.text_to_image(Text2Image(prompt="a lighthouse", **fields))["id"])
        assert plain["status"] == "success" and "warnings" not in plain, plain
        fetched = httpx.post(f"{url}/api/v3/fetch/{plain['id']}", json={"key": "sdk-key"}, timeout=60)
        assert "warnings" not in fetched.json() and "x-sdserve-warning" not in fetched.headers
