"""The safety checker, prompt enhancer and captioner on their tiny random-weight versions
(engine.auxiliary.tiny), through the dialects: flags and obscured images, the server's
policy, fail-closed checks, seeded prompt rewrites, captions, and their memory accounting."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import make_app

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
FAST = {"model": SD15, "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "seed": 5}
ML = {"key": "k", "model_id": SD15, "prompt": "a lighthouse", "width": "64", "height": "64",
      "num_inference_steps": "2", "seed": 5, "enhance_prompt": "no"}


def _job(client: TestClient, **body: object) -> dict:
    r = client.post("/v1/jobs", json={**FAST, **body})
    assert r.status_code == 201, r.text
    job = client.get(f"/v1/jobs/{r.json()['id']}?wait=1").json()
    for _ in range(600):
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        import time

        time.sleep(0.1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    raise AssertionError(job)


def _pixels(client: TestClient, url: str) -> Image.Image:
    path = url.split("//", 1)[-1].split("/", 1)[1]
    return Image.open(io.BytesIO(client.get("/" + path).content)).convert("RGB")


def _b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_tiny_checker_flags_one_sample_and_not_the_other(engine) -> None:  # type: ignore[no-untyped-def]
    from sdserve.engine.auxiliary.tiny import safety_samples

    flagged, clean = safety_samples()
    with engine._lock:
        checker = engine.aux._model("safety-checker")
    assert checker.check([flagged, clean, clean, flagged]) == [True, False, False, True]


def test_native_flags_each_output_and_obscures_only_the_flagged(client) -> None:  # type: ignore[no-untyped-def]
    plain = _job(client, n=8)
    checked = _job(client, n=8, safety_check=True)
    assert plain["status"] == checked["status"] == "succeeded", checked
    flags = [o["nsfw"] for o in checked["outputs"]]
    assert [o["nsfw"] for o in plain["outputs"]] == [None] * 8
    assert True in flags and False in flags, flags  # the tiny checker's threshold splits noise images
    for flag, a, b in zip(flags, plain["outputs"], checked["outputs"], strict=True):
        original, seen = _pixels(client, a["url"]), _pixels(client, b["url"])
        if flag:
            assert seen.getextrema() == ((0, 0), (0, 0), (0, 0))  # black, the default
        else:
            assert seen.tobytes() == original.tobytes()  # unflagged images are untouched


def test_modelslab_safety_checker_yes_with_a_type(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/api/v3/text2img", json={**ML, "samples": "4", "safety_checker": "yes",
                                              "safety_checker_type": "pixelate"})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", body
    assert len(body["nsfw_outputs"]) == 4 and body["nsfw_content_detected"] == any(body["nsfw_outputs"])
    m = body["meta"]
    assert (m["safety_checker"], m["safety_checker_type"]) == ("yes", "pixelate")
    off = client.post("/api/v3/text2img", json={**ML, "samples": "1"}).json()
    assert off["nsfw_content_detected"] is False and "nsfw_outputs" not in off and off["meta"]["safety_checker"] == "no"
    bad = client.post("/api/v3/text2img", json={**ML, "safety_checker": "yes", "safety_checker_type": "sepia"})
    assert bad.status_code == 400 and "safety_checker_type" in bad.text


def test_policy_always_checks_every_dialect_and_off_refuses(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with TestClient(make_app(settings, engine, safety_checker="always")) as c:
        job = _job(c, n=2)  # did not ask
        assert [o["nsfw"] is not None for o in job["outputs"]] == [True, True]
        r = c.post("/api/v3/text2img", json={**ML, "safety_checker": "no"})
        assert r.json()["meta"]["safety_checker"] == "yes" and "nsfw_outputs" in r.json()
    with TestClient(make_app(settings, engine, safety_checker="off")) as c:
        r = c.post("/api/v3/text2img", json={**ML, "safety_checker": "yes"})
        assert r.status_code == 400 and "safety_checker" in r.json()["message"] and "off" in r.json()["message"]


def test_checker_without_weights_is_a_4xx_naming_pull(client, engine, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sdserve.engine.auxiliary.specs import AuxSpec
    from sdserve.engine.catalog import WeightSource

    monkeypatch.setitem(engine.aux.specs, "safety-checker", AuxSpec("safety-checker", WeightSource(path=tmp_path)))
    r = client.post("/api/v3/text2img", json={**ML, "safety_checker": "yes"})
    assert r.status_code == 400 and "sdserve pull safety-checker" in r.json()["message"], r.text
    assert "safety_checker" in r.json()["message"]
    r = client.post("/v1/jobs", json={**FAST, "safety_check": True})
    assert r.status_code == 400 and "sdserve pull safety-checker" in r.text


def test_a_failing_checker_fails_the_job_closed(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sdserve.engine.auxiliary.models import SafetyChecker

    def broken(self, images):  # type: ignore[no-untyped-def]
        raise RuntimeError("checker broke")

    monkeypatch.setattr(SafetyChecker, "check", broken)
    job = _job(client, safety_check=True)
    assert job["status"] == "failed" and job["outputs"] == [] and "safety checker failed" in job["error"]["message"]
    assert _job(client)["status"] == "succeeded"  # a job not asking is not affected


def test_enhancer_is_seeded_and_shown_where_prompts_are(client) -> None:  # type: ignore[no-untyped-def]
    a = _job(client, enhance_prompt=True)
    b = _job(client, enhance_prompt=True)
    other = _job(client, enhance_prompt=True, seed=6)
    p = a["params"]
    assert p["original_prompt"] == "a lighthouse" and p["prompt"].startswith("a lighthouse ") and p["prompt"] != "a lighthouse"
    assert b["params"]["prompt"] == p["prompt"] and other["params"]["prompt"] != p["prompt"]
    assert _pixels(client, a["outputs"][0]["url"]).tobytes() == _pixels(client, b["outputs"][0]["url"]).tobytes()
    png = client.get("/" + a["outputs"][0]["url"].split("//", 1)[-1].split("/", 1)[1]).content
    assert p["prompt"] in Image.open(io.BytesIO(png)).info["parameters"]  # A1111 infotext
    ml = client.post("/api/v3/text2img", json={k: v for k, v in ML.items() if k != "enhance_prompt"}).json()
    assert ml["meta"]["enhance_prompt"] == "yes" and ml["meta"]["prompt"] == p["prompt"], ml["meta"]


def test_enhancer_output_that_is_empty_falls_back_with_a_warning(client, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sdserve.engine.auxiliary.models import Enhancer

    monkeypatch.setattr(Enhancer, "enhance", lambda self, prompts, seeds: [""] * len(prompts))
    job = _job(client, enhance_prompt=True)
    assert job["params"]["prompt"] == "a lighthouse" and job["params"]["original_prompt"] is None
    assert any("added nothing" in w for w in job["warnings"])
    monkeypatch.setattr(Enhancer, "enhance", lambda self, prompts, seeds: ["x" * 5000] * len(prompts))
    assert any("over 1000 characters" in w for w in _job(client, enhance_prompt=True)["warnings"])
    # A1111 syntax the prompt checks refuse (separate LoRA weights): the prompt as sent runs.
    monkeypatch.setattr(Enhancer, "enhance", lambda self, prompts, seeds: [p + " <lora:x:1:0.5>" for p in prompts])
    job = _job(client, enhance_prompt=True)
    assert job["status"] == "succeeded" and job["params"]["prompt"] == "a lighthouse", job
    assert any("did not pass the prompt checks" in w for w in job["warnings"])


def test_interrogate_captions_and_refuses_other_models(client) -> None:  # type: ignore[no-untyped-def]
    from sdserve.engine.auxiliary.tiny import TINY_WORDS, safety_samples

    img = _b64(safety_samples()[0])
    r = client.post("/sdapi/v1/interrogate", json={"image": img, "model": "clip"})
    assert r.status_code == 200, r.text
    words = r.json()["caption"].split()
    assert words and all(w in TINY_WORDS for w in words)
    assert client.post("/sdapi/v1/interrogate", json={"image": img}).json() == r.json()  # deterministic, clip default
    dd = client.post("/sdapi/v1/interrogate", json={"image": img, "model": "deepdanbooru"})
    assert dd.status_code == 404 and "deepdanbooru" in dd.text
    bad = client.post("/sdapi/v1/interrogate", json={"image": base64.b64encode(b"not an image").decode()})
    assert 400 <= bad.status_code < 500 and "image" in bad.text
    native = client.post("/v1/caption", json={"image": img})
    assert native.status_code == 200 and native.json()["caption"] == r.json()["caption"]
    assert client.post("/v1/caption", json={"image": "@@"}).status_code == 400


def test_auxiliary_models_share_the_budget_and_show_in_readyz_and_metrics(client) -> None:  # type: ignore[no-untyped-def]
    _job(client, safety_check=True)
    ready = client.get("/readyz").json()
    assert ready["auxiliary"]["safety-checker"] == "loaded" and "aux:safety-checker" in ready["loaded_models"]
    assert ready["model_bytes"]["aux:safety-checker"] > 0
    metrics = client.get("/metrics").text
    assert 'sdserve_model_memory_bytes{model="aux:safety-checker"}' in metrics


def test_openai_revised_prompt_when_the_server_enables_it(settings, engine) -> None:  # type: ignore[no-untyped-def]
    body = {"prompt": "a lighthouse", "size": "64x64", "response_format": "b64_json", "steps": 2, "seed": 5}
    with TestClient(make_app(settings, engine, enhance_prompt_dialects=["openai"])) as c:
        r = c.post("/v1/images/generations", json=body)
        assert r.status_code == 200, r.text
        revised = r.json()["data"][0]["revised_prompt"]
        assert revised.startswith("a lighthouse ") and revised != "a lighthouse"
        assert c.post("/v1/images/generations", json=body).json()["data"][0]["revised_prompt"] == revised
    with TestClient(make_app(settings, engine)) as c:
        assert "revised_prompt" not in c.post("/v1/images/generations", json=body).json()["data"][0]
