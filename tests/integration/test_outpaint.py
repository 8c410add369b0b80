"""Outpainting on the real engine (tiny models): the padded size, the original pixels kept
outside the mask, batching with itself alone == together, the native field and its 4xx."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from sdserve.engine.outpaint import Outpaint, pad_and_mask
from sdserve.engine.params import BatchItem, GenerationParams, input_images
from sdserve.errors import BadInput
from tests.conftest import png_of
from tests.jobs_support import wait_done

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
INPAINTING = "@cf/runwayml/stable-diffusion-v1-5-inpainting"


def picture(w: int = 48, h: int = 40, seed: int = 3) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))


def params(model: str = SD15, image: Image.Image | None = None, **kw) -> GenerationParams:  # type: ignore[no-untyped-def]
    o = kw.pop("outpaint", Outpaint(left=8, right=8, top=16, bottom=8, overlap=4))
    base = {"prompt": "a wider view", "steps": 2, "seed": 11, "strength": 1.0,
            "inputs": input_images(png_of(image or picture()))}
    return GenerationParams(model=model, outpaint=o, **{**base, **kw})


def test_pad_and_mask_shapes_and_overlap() -> None:
    im = picture()
    canvas, mask = pad_and_mask(im, Outpaint(left=8, top=16, overlap=4))
    assert canvas.size == mask.size == (56, 56)
    m = np.asarray(mask)
    assert np.array_equal(np.asarray(canvas)[16:, 8:], np.asarray(im))  # the original unchanged
    # Repaint: the margins and 4 px into the sides that grew (left, top); not the right/bottom edge.
    assert m[:20].min() == 255 and m[:, :12].min() == 255
    assert m[20:, 12:].max() == 0


@pytest.mark.parametrize("model", [SD15, INPAINTING])
def test_outpaint_size_and_kept_pixels(engine, model: str) -> None:  # type: ignore[no-untyped-def]
    im = picture()
    res = engine.generate(params(model, im))
    out = np.asarray(res.images[0].convert("RGB"))
    assert res.params.task == "inpaint" and out.shape == (64, 64, 3)  # 48+8+8 x 40+16+8
    # Outside the mask (the original less its 4-px overlap on the grown sides) nothing moved.
    assert np.array_equal(out[20:52, 12:44], np.asarray(im)[4:36, 4:36])
    assert not np.array_equal(out[:16], np.asarray(pad_and_mask(im, params().outpaint)[0])[:16])  # type: ignore[arg-type]


def test_outpaint_batched_equals_alone_and_batches_with_inpaint(engine) -> None:  # type: ignore[no-untyped-def]
    a, b = params(image=picture(seed=1)), params(image=picture(seed=2), seed=12)
    alone = [engine.generate(p).images[0] for p in (a, b)]
    together = engine.generate_batch([BatchItem(a), BatchItem(b)])
    for one, res in zip(alone, together, strict=True):
        assert res.timings["batch_requests"] == 2
        assert np.abs(np.asarray(one, dtype=np.int16) - np.asarray(res.images[0], dtype=np.int16)).max() <= 2


@pytest.mark.parametrize(("o", "field"), [
    (Outpaint(left=4090), "outpaint.left"), (Outpaint(top=10, bottom=4090), "outpaint.bottom"),
    (Outpaint(), "outpaint")])
def test_bad_margins_name_the_field(engine, o: Outpaint, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInput) as e:
        engine.prepare(params(outpaint=o))
    assert e.value.field == field


def test_outpaint_needs_an_image_and_no_mask(engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadInput) as e:
        engine.prepare(GenerationParams(model=SD15, prompt="x", outpaint=Outpaint(left=8)))
    assert e.value.field == "image"
    with pytest.raises(BadInput) as e:
        engine.prepare(params(inputs=input_images(png_of(picture()), png_of(Image.new("L", (48, 40))))))
    assert e.value.field == "mask"


def _b64(im: Image.Image) -> str:
    return base64.b64encode(png_of(im)).decode()


def test_native_outpaint_field(client) -> None:  # type: ignore[no-untyped-def]
    im = picture()
    r = client.post("/v1/jobs", json={"model": SD15, "prompt": "a wider view", "steps": 2, "seed": 3, "strength": 1,
                                      "image": _b64(im), "outpaint": {"left": 16, "bottom": 24, "overlap": 8}})
    assert r.status_code == 201, r.text
    job = wait_done(client, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["params"]["outpaint"]["left"] == 16 and job["params"]["task"] == "inpaint"
    out = Image.open(io.BytesIO(client.get(job["outputs"][0]["url"]).content)).convert("RGB")
    assert out.size == (64, 64)
    assert np.array_equal(np.asarray(out)[:32, 24:], np.asarray(im)[:32, 8:])  # right of the overlap, above it
    bad = client.post("/v1/jobs", json={"model": SD15, "prompt": "x", "image": _b64(im), "outpaint": {"right": 4090}})
    assert bad.status_code == 400 and "outpaint.right" in bad.text, bad.text
    neg = client.post("/v1/jobs", json={"model": SD15, "prompt": "x", "image": _b64(im), "outpaint": {"top": -8}})
    assert neg.status_code == 400 and "outpaint" in neg.text and "top" in neg.text, neg.text


def test_modelslab_outpaint_endpoint(client) -> None:  # type: ignore[no-untyped-def]
    im = picture(32, 32)
    body = {"key": "k", "model_id": INPAINTING, "prompt": "a wider view", "width": 96, "height": 64,
            "overlap_width": 4, "num_inference_steps": 2, "seed": 9, "base64": True,
            "image": "data:image/png;base64," + _b64(im)}
    r = client.post("/api/v6/image_editing/outpaint", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "success" and isinstance(out["generationTime"], float) and out["proxy_links"]
    assert out["meta"]["overlap_width"] == 4 and out["meta"]["outpaint"]["left"] == 16
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["output"][0]))).convert("RGB"))
    # 32x32 fits 96x64 as 64x64 (scaled by 2) centred: 16 px left and right, kept inside the
    # overlap (top and bottom did not grow: kept to the edge).
    assert got.shape == (64, 96, 3)
    fitted = np.asarray(im.resize((64, 64), Image.Resampling.LANCZOS))
    assert np.array_equal(got[:, 20:76], fitted[:, 4:60])
    again = client.post("/api/v6/image_editing/outpaint", json=body).json()
    assert again["output"] == out["output"]  # same seed, same image
    fetched = client.post(f"/api/v6/image_editing/fetch/{out['id']}", json={"key": "k"}).json()
    assert fetched["status"] == "success" and fetched["id"] == out["id"]
    for bad, field in (({"width": 2000}, "width"), ({"overlap_width": 50}, "overlap_width"),
                       ({"image": None}, "image"), ({"width": 64, "height": 64, "image": _b64(im)}, "width")):
        e = client.post("/api/v6/image_editing/outpaint", json={**body, **bad})
        assert e.status_code == 400 and e.json()["status"] == "error" and field in str(e.json()), e.text
