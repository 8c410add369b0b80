"""The OpenAI Images dialect driven by the official ``openai`` SDK over a real socket.

One uvicorn server (real engine, tiny SD 1.5, 64 px, 2 steps) serves the module; the SDK
talks to it exactly as it would to api.openai.com with ``base_url`` pointed at sdserve.
"""

from __future__ import annotations

import base64
import io
import time

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.conftest import make_app, mask_bytes, png_bytes
from tests.integration.live_server import live_server

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
FAST = {"steps": 2}


@pytest.fixture(scope="module")
def base_url(settings, engine):  # type: ignore[no-untyped-def]
    with live_server(make_app(settings, engine)) as url:
        yield url


@pytest.fixture(scope="module")
def oa(base_url: str) -> openai.OpenAI:
    # Any key works on an open server; the SDK insists on one.
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-anything", max_retries=0, timeout=120)


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _rgba_mask(hole: tuple[int, int, int, int] = (16, 16, 48, 48), invert: bool = False) -> bytes:
    """OpenAI polarity: transparent = edit. ``invert`` makes everything but the hole transparent."""
    m = Image.new("RGBA", (64, 64), (0, 0, 0, 0 if invert else 255))
    m.paste((0, 0, 0, 255 if invert else 0), hole)
    buf = io.BytesIO()
    m.save(buf, format="PNG")
    return buf.getvalue()


def test_generate_b64_json(oa: openai.OpenAI) -> None:
    res = oa.images.generate(model="dall-e-2", prompt="a red fox", n=2, size="64x64", response_format="b64_json",
                             extra_body={**FAST, "seed": 11})
    assert len(res.data) == 2
    datas = [base64.b64decode(d.b64_json) for d in res.data]
    for d, seed in zip(datas, (11, 12), strict=True):
        img = Image.open(io.BytesIO(d))
        assert img.format == "PNG" and img.size == (64, 64)
        assert f"Seed: {seed}" in img.text["parameters"]
    assert [d.seed for d in res.data] == [11, 12]  # sdserve's extension, kept by the SDK as an extra
    assert not np.array_equal(_pixels(datas[0]), _pixels(datas[1]))
    assert res._request_id and res._request_id.startswith("req_")


def test_url_responses_serve_the_same_pixels_for_the_same_seed(oa: openai.OpenAI) -> None:
    a = oa.images.generate(prompt="a lighthouse", size="64x64", extra_body={**FAST, "seed": 5})
    b = oa.images.generate(model=SD15, prompt="a lighthouse", size="64x64", extra_body={**FAST, "seed": 5})
    c = oa.images.generate(model="sd15", prompt="a lighthouse", size="64x64", extra_body={**FAST, "seed": 6})
    urls = [r.data[0].url for r in (a, b, c)]
    assert len(set(urls)) == 3 and all(u.startswith("http://127.0.0.1:") for u in urls)
    got = [httpx.get(u) for u in urls]
    assert all(r.status_code == 200 and r.headers["content-type"] == "image/png" for r in got)
    assert np.array_equal(_pixels(got[0].content), _pixels(got[1].content))
    assert not np.array_equal(_pixels(got[0].content), _pixels(got[2].content))


def test_output_format_jpeg(oa: openai.OpenAI) -> None:
    res = oa.images.generate(prompt="x", size="64x64", output_format="jpeg", response_format="b64_json",
                             extra_body=FAST)
    assert base64.b64decode(res.data[0].b64_json)[:2] == b"\xff\xd8"
    assert res.output_format == "jpeg"


def test_edit_mask_polarity_matches_workers_ai_white_mask(oa: openai.OpenAI, base_url: str) -> None:
    """OpenAI's transparent-means-edit mask is the same job as Workers AI's white-means-repaint one."""
    image = png_bytes((64, 64), (30, 120, 200))
    res = oa.images.edit(image=("in.png", image, "image/png"), mask=("m.png", _rgba_mask(), "image/png"),
                         prompt="a window", response_format="b64_json", extra_body={**FAST, "seed": 3})
    edited = base64.b64decode(res.data[0].b64_json)
    assert Image.open(io.BytesIO(edited)).size == (64, 64)
    wa = httpx.post(f"{base_url}/ai/run/{SD15}", timeout=120, json={
        "prompt": "a window", "image": list(image), "mask": list(mask_bytes((64, 64), (16, 16, 48, 48))),
        "num_steps": 2, "seed": 3})
    assert wa.status_code == 200, wa.text
    assert np.array_equal(_pixels(edited), _pixels(wa.content))
    inverted = oa.images.edit(image=("in.png", image), mask=("m.png", _rgba_mask(invert=True)), prompt="a window",
                              response_format="b64_json", extra_body={**FAST, "seed": 3})
    assert not np.array_equal(_pixels(edited), _pixels(base64.b64decode(inverted.data[0].b64_json)))


def test_edit_without_mask_uses_image_transparency_and_image_array(oa: openai.OpenAI) -> None:
    image = Image.new("RGBA", (72, 64), (200, 40, 40, 255))
    image.paste((0, 0, 0, 0), (8, 8, 40, 40))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    # A list of images goes out as repeated `image[]` parts.
    res = oa.images.edit(image=[("in.png", buf.getvalue())], prompt="a hole", n=2, response_format="b64_json",
                         extra_body=FAST)
    assert len(res.data) == 2
    img = Image.open(io.BytesIO(base64.b64decode(res.data[0].b64_json)))
    assert img.size == (72, 64)
    assert "Denoising strength: 1.0" in img.text["parameters"]  # inpaint, not the img2img default


def test_create_variation(oa: openai.OpenAI) -> None:
    res = oa.images.create_variation(image=("in.png", png_bytes((64, 64), (10, 200, 30))), n=1,
                                     response_format="b64_json", extra_body=FAST)
    img = Image.open(io.BytesIO(base64.b64decode(res.data[0].b64_json)))
    assert img.size == (64, 64)
    assert "Denoising strength: 0.7" in img.text["parameters"]


def test_models_list_and_retrieve(oa: openai.OpenAI, engine) -> None:  # type: ignore[no-untyped-def]
    ids = [m.id for m in oa.models.list()]
    assert ids == [s.id.removeprefix("@cf/") for s in engine.catalog]
    assert oa.models.retrieve("dall-e-3").id == "dall-e-3"
    assert oa.models.retrieve(SD15).owned_by == "sdserve"
    with pytest.raises(openai.NotFoundError) as e:
        oa.models.retrieve("no-such-model")
    assert e.value.code == "model_not_found"


def test_bad_input_raises_the_sdk_errors_with_param(oa: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        oa.images.generate(prompt="x", size="100x100")
    assert (e.value.status_code, e.value.param, e.value.code) == (400, "size", "invalid_value")
    assert "size" in e.value.message and e.value.request_id.startswith("req_")
    with pytest.raises(openai.BadRequestError) as e:
        oa.images.generate(prompt="x", n=11)
    assert e.value.param == "n"
    with pytest.raises(openai.BadRequestError) as e:
        oa.images.edit(image=("in.png", png_bytes()), mask=("m.png", png_bytes((64, 64), (0, 0, 0))), prompt="x")
    assert e.value.param == "mask" and "transparent" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        oa.images.create_variation(image=("in.png", b"definitely not a png"))
    assert e.value.param == "image"
    with pytest.raises(openai.NotFoundError) as e:
        oa.images.generate(model="midjourney-v6", prompt="x")
    assert (e.value.param, e.value.code) == ("model", "model_not_found")


def test_keys_are_checked(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with live_server(make_app(settings, engine, api_keys=["sk-right"])) as url:
        wrong = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as e:
            wrong.models.list()
        assert e.value.code == "invalid_api_key"
        right = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-right", max_retries=0)
        assert len(list(right.models.list())) > 0


def test_every_response_has_a_request_id_and_errors_have_the_openai_shape(client) -> None:  # type: ignore[no-untyped-def]
    for r in (client.get("/v1/models"), client.get("/v1/images/nowhere"),
              client.post("/v1/images/generations", content=b"{not json", headers={"content-type": "application/json"}),
              client.post("/v1/images/edits", files={"image": ("a.png", b"xx")}, data={"prompt": "x"}),
              client.post("/v1/images/edits", data={"prompt": "x", "image": "text, not a file"},
                          files={"mask": ("m.png", b"xx")})):
        assert r.headers["x-request-id"].startswith("req_"), r.url
        if r.status_code != 200:
            assert 400 <= r.status_code < 500
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert "x-request-id" not in client.get("/healthz").headers


def test_stream_sends_partial_images_then_the_completed_ones(oa: openai.OpenAI) -> None:
    # 10 steps, a preview every 5: partial images at steps 5 and 10, then the final images.
    stream = oa.images.generate(prompt="a red fox", n=2, size="64x64", stream=True, partial_images=2,
                                quality="high", extra_body={"steps": 10, "seed": 21})
    events = list(stream)
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"] * 2
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    for e in events:
        img = Image.open(io.BytesIO(base64.b64decode(e.b64_json)))
        assert img.format == "PNG" and img.size == (64, 64) and e.size == "64x64" and e.quality == "high"
    done = events[2:]
    assert [e.seed for e in done] == [21, 22] and done[0].usage.total_tokens == 0
    same = oa.images.generate(prompt="a red fox", n=2, size="64x64", response_format="b64_json",
                              extra_body={"steps": 10, "seed": 21})  # the same request, not streamed
    for e, d in zip(done, same.data, strict=True):
        assert np.array_equal(_pixels(base64.b64decode(e.b64_json)), _pixels(base64.b64decode(d.b64_json)))


def test_stream_edits_and_refuses_bad_input_before_streaming(oa: openai.OpenAI) -> None:
    events = list(oa.images.edit(image=("in.png", png_bytes()), mask=("m.png", _rgba_mask()), prompt="a door",
                                 stream=True, output_format="webp", extra_body={"steps": 2, "seed": 4}))
    assert [e.type for e in events] == ["image_edit.completed"]  # partial_images defaults to 0
    assert Image.open(io.BytesIO(base64.b64decode(events[0].b64_json))).format == "WEBP"
    with pytest.raises(openai.BadRequestError) as e:
        oa.images.generate(prompt="x", size="100x100", stream=True, partial_images=1)
    assert e.value.param == "size"


def test_a_stream_whose_job_is_canceled_ends_with_an_error_the_sdk_raises(oa: openai.OpenAI, base_url: str) -> None:
    stream = oa.images.generate(prompt="slow", size="64x64", stream=True, extra_body={"steps": 200, "seed": 1})
    job = stream.response.headers["x-sdserve-job"]
    assert httpx.delete(f"{base_url}/v1/jobs/{job}").status_code == 200
    with pytest.raises(openai.APIError) as e:
        list(stream)
    assert "cancel" in e.value.message


def test_closing_a_stream_cancels_its_job(base_url: str) -> None:
    body = {"prompt": "slow", "size": "64x64", "stream": True, "steps": 200, "seed": 1}
    with httpx.stream("POST", f"{base_url}/v1/images/generations", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        job = r.headers["x-sdserve-job"]
    deadline = time.monotonic() + 60
    while httpx.get(f"{base_url}/v1/jobs/{job}").json()["status"] != "canceled":
        assert time.monotonic() < deadline, "the job went on after its client left"
        time.sleep(0.1)
