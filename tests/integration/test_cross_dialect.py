"""Same seed + params + model => the same image whichever dialect asks: Workers AI, OpenAI
and A1111 requests for one job decode to identical pixels (txt2img, img2img and inpaint,
with each dialect's own mask polarity), and changing one parameter changes them."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from tests.conftest import mask_bytes, png_bytes

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
PROMPT = "a lighthouse on a cliff at dawn"


def _px(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _workers_ai(client, **body) -> np.ndarray:  # type: ignore[no-untyped-def]
    r = client.post(f"/ai/run/{SD15}", json={"prompt": PROMPT, **body})
    assert r.status_code == 200, r.text
    return _px(r.content)


def _openai(client, path: str = "/v1/images/generations", files=None, **body) -> np.ndarray:  # type: ignore[no-untyped-def]
    if files is None:
        r = client.post(path, json={"model": SD15, "prompt": PROMPT, "response_format": "b64_json", **body})
    else:
        form = {"model": SD15, "prompt": PROMPT, "response_format": "b64_json", **{k: str(v) for k, v in body.items()}}
        r = client.post(path, data=form, files=files)
    assert r.status_code == 200, r.text
    return _px(base64.b64decode(r.json()["data"][0]["b64_json"]))


def _a1111(client, path: str = "/sdapi/v1/txt2img", **body) -> np.ndarray:  # type: ignore[no-untyped-def]
    # DPM++ 2M on A1111's "DDIM" schedule type is the tiny SD 1.5's own leading spacing, which
    # the other dialects run (A1111's Automatic for DPM++ 2M would be Karras).
    body = {"prompt": PROMPT, "sampler_name": "DPM++ 2M", "scheduler": "DDIM",
            "override_settings": {"sd_model_checkpoint": SD15}, **body}
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return _px(base64.b64decode(r.json()["images"][0]))


def test_txt2img_is_the_same_in_every_dialect(client) -> None:  # type: ignore[no-untyped-def]
    # SD 1.5's defaults are DPM++ 2M at guidance 7.5; A1111 names both explicitly (its own
    # defaults are Euler and 7).
    wa = _workers_ai(client, width=256, height=256, num_steps=2, seed=1234)
    oa = _openai(client, size="256x256", steps=2, seed=1234)
    a1 = _a1111(client, width=256, height=256, steps=2, seed=1234, cfg_scale=7.5)
    assert wa.shape == (256, 256, 3)
    assert np.array_equal(wa, oa) and np.array_equal(wa, a1)
    other_sampler = _a1111(client, width=256, height=256, steps=2, seed=1234, cfg_scale=7.5, sampler_name="Euler")
    other_seed = _openai(client, size="256x256", steps=2, seed=1235)
    assert not np.array_equal(wa, other_sampler) and not np.array_equal(wa, other_seed)


def test_img2img_is_the_same_in_every_dialect(client) -> None:  # type: ignore[no-untyped-def]
    image = png_bytes((64, 64), (40, 90, 220))
    wa = _workers_ai(client, image=list(image), strength=0.6, num_steps=2, seed=7)
    oa = _openai(client, "/v1/images/edits", files={"image": ("in.png", image)}, strength=0.6, steps=2, seed=7)
    a1 = _a1111(client, "/sdapi/v1/img2img", init_images=[_b64(image)], width=64, height=64, denoising_strength=0.6,
                steps=2, seed=7, cfg_scale=7.5)
    assert np.array_equal(wa, oa) and np.array_equal(wa, a1)


def test_inpaint_is_the_same_in_every_dialect_despite_opposite_mask_polarities(client) -> None:  # type: ignore[no-untyped-def]
    image = png_bytes((64, 64), (40, 90, 220))
    white_repaints = mask_bytes((64, 64), (8, 16, 40, 56))  # Workers AI and A1111: white = repaint
    transparent = Image.new("RGBA", (64, 64), (0, 0, 0, 255))  # OpenAI: transparent = edit
    transparent.paste((0, 0, 0, 0), (8, 16, 40, 56))
    buf = io.BytesIO()
    transparent.save(buf, format="PNG")
    wa = _workers_ai(client, image=list(image), mask=list(white_repaints), num_steps=2, seed=21)
    oa = _openai(client, "/v1/images/edits", files={"image": ("in.png", image), "mask": ("m.png", buf.getvalue())},
                 steps=2, seed=21)
    a1 = _a1111(client, "/sdapi/v1/img2img", init_images=[_b64(image)], mask=_b64(white_repaints), width=64, height=64,
                denoising_strength=1.0, steps=2, seed=21, cfg_scale=7.5, mask_blur=0, inpaint_full_res=False,
                inpainting_fill=1)  # "original": what the other dialects do (A1111's default 0 fills first)
    assert np.array_equal(wa, oa) and np.array_equal(wa, a1)
    flipped = _a1111(client, "/sdapi/v1/img2img", init_images=[_b64(image)], mask=_b64(white_repaints), width=64,
                     height=64, denoising_strength=1.0, steps=2, seed=21, cfg_scale=7.5, mask_blur=0,
                     inpaint_full_res=False, inpainting_mask_invert=1, inpainting_fill=1)
    assert not np.array_equal(wa, flipped)
