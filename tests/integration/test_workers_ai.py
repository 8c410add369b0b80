"""The Workers AI dialect over HTTP, on the real app, job service and engine (tiny models).

Every input field with its documented limits (reference §1.3), both run routes, the model
search, and every error path: each answers the Cloudflare envelope with the right code and
a 4xx naming the field, never a 500, and the server keeps serving afterwards.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from sdserve.engine.params import GenerationParams
from tests.conftest import make_app, mask_bytes, png_bytes

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
INPAINTING = "@cf/runwayml/stable-diffusion-v1-5-inpainting"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
LIGHTNING = "@cf/bytedance/stable-diffusion-xl-lightning"
LCM = "@cf/lykon/dreamshaper-8-lcm"
REFINER = "stabilityai/stable-diffusion-xl-refiner-1.0"  # img2img only; listed as CF lists its img2img model
ACCOUNT = "/client/v4/accounts/0123456789abcdef/ai/run/"
SHORT = "/ai/run/"
SEARCH = "/client/v4/accounts/0123456789abcdef/ai/models/search"
SMALL = {"width": 256, "height": 256, "num_steps": 2}  # the schema's smallest size, 2 steps


@pytest.fixture(scope="module")
def client(settings, engine) -> Iterator:  # type: ignore[no-untyped-def]
    """One app for the module: the point of many tests is that it keeps serving."""
    from fastapi.testclient import TestClient

    with TestClient(make_app(settings, engine), raise_server_exceptions=False) as c:
        yield c


def decode(resp) -> Image.Image:  # type: ignore[no-untyped-def]
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    assert resp.content.startswith(b"\x89PNG\r\n\x1a\n")  # raw bytes, not a JSON envelope
    img = Image.open(io.BytesIO(resp.content))
    img.load()
    return img


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def assert_envelope(resp, status: int, code: int, *words: str) -> str:  # type: ignore[no-untyped-def]
    """The Cloudflare v4 error envelope with all four keys; returns the message."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"success", "errors", "messages", "result"}
    assert body["success"] is False and body["messages"] == [] and body["result"] == {}
    assert len(body["errors"]) == 1 and set(body["errors"][0]) == {"code", "message"}
    assert body["errors"][0]["code"] == code
    message = body["errors"][0]["message"]
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    return message


# -- success -----------------------------------------------------------------------------

@pytest.mark.parametrize("route", [ACCOUNT, SHORT])
def test_txt2img_on_both_routes(client, route: str) -> None:  # type: ignore[no-untyped-def]
    r = client.post(route + SDXL, json={"prompt": "a lighthouse on a cliff", "seed": 42, **SMALL})
    img = decode(r)
    assert img.size == (256, 256)
    assert r.headers["x-sdserve-seed"] == "42"
    info = img.text["parameters"]
    assert info.startswith("a lighthouse on a cliff\n") and "Seed: 42" in info and "Steps: 2" in info


def test_both_routes_and_the_engine_make_the_same_image(client, engine) -> None:  # type: ignore[no-untyped-def]
    body = {"prompt": "a red barn", "negative_prompt": "fog", "guidance": 5.0, "seed": 7, **SMALL}
    a = pixels(decode(client.post(ACCOUNT + SD15, json=body)))
    b = pixels(decode(client.post(SHORT + SD15, json=body)))
    direct = engine.generate(GenerationParams(model=SD15, prompt="a red barn", negative_prompt="fog", guidance=5.0,
                                              seed=7, width=256, height=256, steps=2)).images[0]
    assert np.array_equal(a, b) and np.array_equal(a, pixels(direct))


def test_a_random_seed_is_drawn_and_reported(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post(SHORT + LIGHTNING, json={"prompt": "x", **SMALL})
    img = decode(r)
    seed = int(r.headers["x-sdserve-seed"])
    assert 0 <= seed < 2**32 and f"Seed: {seed}" in img.text["parameters"]


def test_schema_defaults_and_few_step_model_defaults(client) -> None:  # type: ignore[no-untyped-def]
    sd15 = decode(client.post(SHORT + SD15, json={"prompt": "x", "width": 256, "height": 256, "seed": 1}))
    assert "Steps: 20" in sd15.text["parameters"] and "CFG scale: 7.5" in sd15.text["parameters"]
    # Few-step models keep their own schedule when the caller does not choose (README).
    lcm = decode(client.post(SHORT + LCM, json={"prompt": "x", "width": 256, "height": 256, "seed": 1}))
    assert "Steps: 6" in lcm.text["parameters"] and "CFG scale: 1.5" in lcm.text["parameters"]


def test_fields_change_the_image(client) -> None:  # type: ignore[no-untyped-def]
    base = {"prompt": "a lighthouse", "seed": 3, **SMALL}
    ref = pixels(decode(client.post(SHORT + SD15, json=base)))
    for change in ({"prompt": "a forest"}, {"negative_prompt": "fog"}, {"guidance": 1.0}, {"seed": 4},
                   {"num_steps": 3}):
        other = pixels(decode(client.post(SHORT + SD15, json={**base, **change})))
        assert np.abs(other - ref).max() > 0, f"{change} did not change the image"


def test_width_and_height_are_honoured(client) -> None:  # type: ignore[no-untyped-def]
    img = decode(client.post(SHORT + SD15, json={"prompt": "x", "width": 320, "height": 256, "num_steps": 1}))
    assert img.size == (320, 256)


def test_img2img_with_image_as_a_byte_array(client) -> None:  # type: ignore[no-untyped-def]
    body = {"prompt": "an oil painting", "image": list(png_bytes((64, 64))), "strength": 0.5, "num_steps": 2, "seed": 1}
    img = decode(client.post(SHORT + SD15, json=body))
    assert img.size == (64, 64)  # img2img keeps the input's size
    assert "Denoising strength: 0.5" in img.text["parameters"]
    default = decode(client.post(SHORT + SD15, json={**body, "strength": None}))
    assert "Denoising strength: 1.0" in default.text["parameters"]  # the schema's default


def test_image_forms_are_equivalent(client) -> None:  # type: ignore[no-untyped-def]
    png = png_bytes((64, 64), color=(20, 120, 220))
    b64 = base64.b64encode(png).decode()
    common = {"prompt": "x", "strength": 1.0, "num_steps": 2, "seed": 9}
    forms = [{"image": list(png)}, {"image": {"image": list(png)}}, {"image_b64": b64},
             {"image_b64": "data:image/png;base64," + b64}]
    images = [pixels(decode(client.post(SHORT + SD15, json={**common, **form}))) for form in forms]
    for other in images[1:]:
        assert np.array_equal(images[0], other)


@pytest.mark.parametrize("model", [INPAINTING, SD15, SDXL])
def test_inpaint_with_image_and_mask(client, model: str) -> None:  # type: ignore[no-untyped-def]
    body = {"prompt": "a window", "image": list(png_bytes()), "mask": list(mask_bytes()), "num_steps": 2, "seed": 1}
    assert decode(client.post(ACCOUNT + model, json=body)).size == (64, 64)
    as_objects = {**body, "image": {"image": body["image"]}, "mask": {"mask": body["mask"]}}
    assert np.array_equal(pixels(decode(client.post(SHORT + model, json=as_objects))),
                          pixels(decode(client.post(SHORT + model, json=body))))


def test_curl_default_content_type_is_read_as_json(client) -> None:  # type: ignore[no-untyped-def]
    # `curl -d '{...}'` without -H sends application/x-www-form-urlencoded; Workers AI takes it.
    body = json.dumps({"prompt": "x", **SMALL}).encode()
    r = client.post(SHORT + SD15, content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert decode(r).size == (256, 256)


# -- bad input: 5006 / 400, naming the field ----------------------------------------------

BAD_BODIES = [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": ["a"]}, "prompt"),
    ({"prompt": "x", "negative_prompt": 3}, "negative_prompt"),
    ({"prompt": "x", "width": 255}, "width"),
    ({"prompt": "x", "width": 2049}, "width"),
    ({"prompt": "x", "height": 100000}, "height"),
    ({"prompt": "x", "width": "512"}, "width"),
    ({"prompt": "x", "width": 512.5}, "width"),
    ({"prompt": "x", "height": True}, "height"),
    ({"prompt": "x", "width": 300}, "width"),  # in range, but not on the 8-pixel latent grid
    ({"prompt": "x", "num_steps": 21}, "num_steps"),
    ({"prompt": "x", "num_steps": 0}, "num_steps"),
    ({"prompt": "x", "num_steps": "20"}, "num_steps"),
    ({"prompt": "x", "strength": 1.5}, "strength"),
    ({"prompt": "x", "strength": -0.1}, "strength"),
    ({"prompt": "x", "strength": "0.5"}, "strength"),
    ({"prompt": "x", "guidance": 51}, "guidance"),
    ({"prompt": "x", "guidance": "high"}, "guidance"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "seed": 2**32}, "seed"),
    ({"prompt": "x", "seed": 1.5}, "seed"),
    ({"prompt": "x", "image": "not an array"}, "image"),
    ({"prompt": "x", "image": []}, "image"),
    ({"prompt": "x", "image": [137, 80, 256]}, "image[2]"),
    ({"prompt": "x", "image": [137, -1]}, "image[1]"),
    ({"prompt": "x", "image": [137.5]}, "image[0]"),
    ({"prompt": "x", "image": {"image": [999]}}, "image[0]"),
    ({"prompt": "x", "image": {"pixels": [1]}}, "image"),
    ({"prompt": "x", "image": [1, 2, 3, 4, 5]}, "image"),  # bytes, but not an image
    ({"prompt": "x", "image": list(png_bytes())[:40]}, "image"),  # truncated PNG
    ({"prompt": "x", "image_b64": "%%% not base64 %%%"}, "image_b64"),
    ({"prompt": "x", "image_b64": base64.b64encode(b"GIF? no.").decode()}, "image_b64"),
    ({"prompt": "x", "image_b64": 12}, "image_b64"),
    ({"prompt": "x", "image": list(png_bytes()), "image_b64": base64.b64encode(png_bytes()).decode()}, "image"),
    ({"prompt": "x", "mask": list(mask_bytes())}, "mask"),  # a mask needs an image
    ({"prompt": "x", "image": list(png_bytes()), "mask": [1, 2, 3]}, "mask"),
    ({"prompt": "x", "image": list(png_bytes()), "mask": [300]}, "mask[0]"),
    ({"prompt": "x", "image": list(png_bytes((64, 64))), "mask": list(mask_bytes((128, 128)))}, "mask"),
    ({"prompt": "x", "image": list(png_bytes()), "strength": 0.1, "num_steps": 2}, "strength"),  # no step left
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD_BODIES)])
def test_bad_input_is_5006_naming_the_field(client, body: dict, field: str) -> None:  # type: ignore[no-untyped-def]
    r = client.post(SHORT + SD15, json=body)
    message = assert_envelope(r, 400, 5006, "AiError: Bad input: Error: ")
    assert f": {field}: " in message or f"Error: {field}:" in message, message


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["strength", "guidance", "seed", "width"])
def test_non_finite_numbers_are_5006(client, token: str, field: str) -> None:  # type: ignore[no-untyped-def]
    r = client.post(SHORT + SD15, content=f'{{"prompt": "x", "{field}": {token}}}'.encode(),
                    headers={"content-type": "application/json"})
    assert_envelope(r, 400, 5006, field)


@pytest.mark.parametrize(("content", "words"), [
    (b"", ["body"]),
    (b"this is not json", ["body", "JSON"]),
    (b'{"prompt": "x",', ["body", "JSON"]),
    (b"[1, 2, 3]", ["body"]),
    (b'"a lighthouse"', ["body"]),
    (b"null", ["body"]),
    (b"\xff\xfe\x00garbage", ["body"]),
])
def test_malformed_bodies_are_5006(client, content: bytes, words: list[str]) -> None:  # type: ignore[no-untyped-def]
    r = client.post(SHORT + SD15, content=content, headers={"content-type": "application/json"})
    assert_envelope(r, 400, 5006, *words)


def test_inpainting_model_without_mask_is_5006(client) -> None:  # type: ignore[no-untyped-def]
    assert_envelope(client.post(SHORT + INPAINTING, json={"prompt": "x", **SMALL}), 400, 5006, "image", "mask")
    r = client.post(SHORT + INPAINTING, json={"prompt": "x", "image": list(png_bytes()), "num_steps": 2})
    assert_envelope(r, 400, 5006, "mask")


@pytest.mark.parametrize("route", [ACCOUNT, SHORT])
@pytest.mark.parametrize("model", ["@cf/nobody/no-such-model", "sd16", "@cf/stabilityai/stable-diffusion-xl-base"])
def test_unknown_model_is_5007(client, route: str, model: str) -> None:  # type: ignore[no-untyped-def]
    r = client.post(route + model, json={"prompt": "x"})
    assert_envelope(r, 400, 5007, f"No such model {model} or task")


def test_model_aliases_and_url_encoded_ids_work(client) -> None:  # type: ignore[no-untyped-def]
    assert decode(client.post(SHORT + "sdxl", json={"prompt": "x", **SMALL})).size == (256, 256)
    encoded = SDXL.replace("@", "%40").replace("/", "%2F")
    assert decode(client.post(SHORT + encoded, json={"prompt": "x", **SMALL})).size == (256, 256)


def test_wrong_method_is_an_envelope(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get(SHORT + SD15)
    assert r.status_code == 405 and r.json()["success"] is False


# -- size limits: 3006 / 413 --------------------------------------------------------------

def test_body_over_the_limit_is_3006(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(make_app(settings, engine, max_body_mb=0.25), raise_server_exceptions=False) as c:
        huge = {"prompt": "x", "image": [0] * 200_000}  # ~600 KB of JSON
        assert_envelope(c.post(SHORT + SD15, json=huge), 413, 3006, "too large")
        assert_envelope(c.post(ACCOUNT + SD15, content=json.dumps(huge).encode()), 413, 3006)
        assert decode(c.post(SHORT + SD15, json={"prompt": "x", **SMALL})).size == (256, 256)


def test_chunked_body_over_the_limit_is_3006(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"x" * 50_000
        yield b'"}'

    with TestClient(make_app(settings, engine, max_body_mb=0.25), raise_server_exceptions=False) as c:
        assert_envelope(c.post(SHORT + SD15, content=chunks()), 413, 3006)


def test_image_over_the_pixel_limit_is_3006(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(make_app(settings, engine, max_image_pixels=100 * 100), raise_server_exceptions=False) as c:
        r = c.post(SHORT + SD15, json={"prompt": "x", "image": list(png_bytes((128, 128)))})
        assert_envelope(r, 413, 3006, "image", "128x128")


# -- auth: 10000 / 401 --------------------------------------------------------------------

def test_api_keys(settings, engine) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    with TestClient(make_app(settings, engine, api_keys=["k1"]), raise_server_exceptions=False) as c:
        good = {"prompt": "x", **SMALL}
        assert_envelope(c.post(SHORT + SD15, json=good), 401, 10000, "Authentication error")
        assert_envelope(c.post(ACCOUNT + SD15, json=good, headers={"Authorization": "Bearer k2"}), 401, 10000)
        assert_envelope(c.post(SHORT + SD15, json=good, headers={"Authorization": "k1"}), 401, 10000)
        # Without a key, a bad body or an unknown model reveals nothing but the auth error.
        assert_envelope(c.post(SHORT + SD15, json={"width": 1}), 401, 10000)
        assert_envelope(c.post(SHORT + "@cf/nope", json=good), 401, 10000)
        assert_envelope(c.get(SEARCH), 401, 10000)
        auth = {"Authorization": "Bearer k1"}
        assert decode(c.post(ACCOUNT + SD15, json=good, headers=auth)).size == (256, 256)
        assert c.get(SEARCH, headers=auth).json()["success"] is True


# -- model search -------------------------------------------------------------------------

def test_model_search_lists_the_catalog(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get(SEARCH)
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    names = [m["name"] for m in body["result"]]
    assert names == [SD15, INPAINTING, SDXL, LIGHTNING, LCM, REFINER]
    assert body["result_info"] == {"page": 1, "per_page": 20, "count": 6, "total_count": 6}
    sdxl = body["result"][2]
    assert sdxl["id"] == "6d52253a-b731-4a03-b203-cde2d4fae871" and sdxl["task"]["name"] == "Text-to-Image"


@pytest.mark.parametrize(("query", "names"), [
    ("search=lightning", [LIGHTNING]),
    ("search=INPAINTING", [INPAINTING]),  # case-insensitive, over name and description
    ("search=latent-consistency", [LCM]),
    ("author=runwayml", [SD15, INPAINTING]),
    ("author=Lykon", [LCM]),
    ("task=Text-to-Image", [SD15, INPAINTING, SDXL, LIGHTNING, LCM, REFINER]),
    ("task=Translation", []),
    ("source=1", [SD15, INPAINTING, SDXL, LIGHTNING, LCM, REFINER]),
    ("source=2", []),
    ("author=stabilityai&search=xl", [SDXL]),
])
def test_model_search_filters(client, query: str, names: list[str]) -> None:  # type: ignore[no-untyped-def]
    body = client.get(f"{SEARCH}?{query}").json()
    assert [m["name"] for m in body["result"]] == names
    assert body["result_info"]["total_count"] == len(names)


def test_model_search_pagination(client) -> None:  # type: ignore[no-untyped-def]
    pages = [client.get(f"{SEARCH}?per_page=2&page={p}").json() for p in (1, 2, 3, 4)]
    assert [len(p["result"]) for p in pages] == [2, 2, 2, 0]
    assert [p["result_info"]["count"] for p in pages] == [2, 2, 2, 0]
    assert {p["result_info"]["total_count"] for p in pages} == {6}
    assert [m["name"] for p in pages for m in p["result"]] == [SD15, INPAINTING, SDXL, LIGHTNING, LCM, REFINER]


@pytest.mark.parametrize("query", ["page=0", "page=abc", "per_page=0", "per_page=1001", "source=x"])
def test_model_search_bad_query_is_5006(client, query: str) -> None:  # type: ignore[no-untyped-def]
    assert_envelope(client.get(f"{SEARCH}?{query}"), 400, 5006, query.split("=")[0])


# -- and the server is still fine ----------------------------------------------------------

def test_after_every_bad_request_the_server_still_serves(client) -> None:  # type: ignore[no-untyped-def]
    # Runs last in this module, on the same app that answered every bad request above.
    assert client.get("/healthz").status_code == 200
    body = {"prompt": "still here", "seed": 11, **SMALL}
    assert decode(client.post(SHORT + SDXL, json=body)).size == (256, 256)
    img = decode(client.post(ACCOUNT + SD15, json={"prompt": "x", "image": list(png_bytes()), "num_steps": 2}))
    assert img.size == (64, 64)


def test_cloudflare_sdk_reads_sdserves_error_messages(settings, engine) -> None:  # type: ignore[no-untyped-def]
    import cloudflare

    from tests.integration.live_server import live_server

    with live_server(make_app(settings, engine)) as url:
        cf = cloudflare.Cloudflare(api_token="any", base_url=url + "/client/v4", max_retries=0)
        with pytest.raises(cloudflare.BadRequestError) as e:
            cf.ai.run(SD15, account_id="acc", prompt="x", num_steps=99)
        assert (e.value.errors[0].code, e.value.status_code) == (5006, 400)
        assert e.value.errors[0].message.startswith("AiError: Bad input: Error: num_steps: ")
        with pytest.raises(cloudflare.APIStatusError) as e:
            cf.ai.run("@cf/nope/nope", account_id="acc", prompt="x")
        assert e.value.errors[0].code == 5007 and "@cf/nope/nope" in e.value.errors[0].message
        # Binary output: the SDK's own ai.run cannot unwrap it, from Cloudflare either
        # (cloudflare-typescript #2695); the raw response is how SDK users read the PNG.
        raw = cf.ai.with_raw_response.run(SD15, account_id="acc", prompt="x", num_steps=2, seed=3)
        assert raw.headers["content-type"] == "image/png" and Image.open(io.BytesIO(raw.http_response.content)).size
