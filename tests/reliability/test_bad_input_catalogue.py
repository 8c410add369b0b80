"""The bad-input catalogue, once, across all five dialects (Workers AI, OpenAI, A1111,
ModelsLab, native): each case is sent in each dialect's own terms to one live app on the real
engine, and must be answered with that dialect's error body, a 4xx and a message (or
``field``/``param``) naming the dialect's field; the valid-but-unusual cases must work.
docs/RELIABILITY.md lists the catalogue and where the dialect suites cover more.

Not here: very long prompts (truncation to the text encoder's limit, with a warning in the
result, is the engine's and tested there).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from sdserve.api.openapi import ERROR_MODELS
from tests.conftest import make_app, mask_bytes, png_bytes
from tests.jobs_support import job_client
from tests.reliability.dialect_errors import assert_names_field

# -- images -----------------------------------------------------------------------------------


def _encode(img: Image.Image, fmt: str = "PNG", **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def header_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with almost no data: refusing
    it must not depend on decoding it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + _png_chunk(b"IEND", b""))


def real_bomb(side: int = 8192) -> bytes:
    """A complete, decodable greyscale PNG of side² zero pixels (64 MP) in ~70 KB: decoding
    it would take 64 MB; it must be refused from its header."""
    row = b"\x00" + b"\x00" * side
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def animated_gif() -> bytes:
    frames = [Image.new("P", (64, 64), i) for i in (10, 200)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def png_16bit() -> bytes:
    return _encode(Image.new("I;16", (64, 64), 40000))


VALID_IMAGES: dict[str, Callable[[], bytes]] = {
    "rgb-png": png_bytes,
    "rgba-png": lambda: png_bytes(mode="RGBA", color=(200, 40, 40, 128)),
    "la-png": lambda: _encode(Image.new("LA", (64, 64), (128, 200))),
    "palette-png": lambda: _encode(Image.new("RGB", (64, 64), (10, 120, 240)).convert("P")),
    "16-bit-png": png_16bit,
    "greyscale-png": lambda: _encode(Image.new("L", (64, 64), 90)),
    "cmyk-jpeg": lambda: _encode(Image.new("CMYK", (64, 64), (0, 128, 255, 0)), "JPEG"),
    "animated-gif": animated_gif,
    "webp": lambda: _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "WEBP"),
}
BAD_IMAGES: dict[str, tuple[Callable[[], bytes], int]] = {
    "not-an-image": (lambda: b"this is text, not an image", 400),
    "truncated-png": (lambda: png_bytes()[:60], 400),
    "truncated-jpeg": (lambda: _encode(Image.new("RGB", (64, 64)), "JPEG")[:200], 400),
    "svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>', 400),
    "header-bomb": (header_bomb, 413),
    "real-bomb": (real_bomb, 413),
}


# -- the dialects, each in its own terms --------------------------------------------------------

Fields = dict[str, Any]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _json(client: Any, path: str, body: Any, **kw: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
    return client.post(path, content=raw, headers={"content-type": "application/json"}, **kw)


@dataclass
class Dialect:
    """How one dialect says each catalogue field, sends a request, and reports success."""

    name: str
    path: str  # the txt2img route
    img_path: str
    names: dict[str, str]  # catalogue field -> the dialect's own name (as errors name it)
    base: Fields  # a cheap, valid txt2img body
    txt2img: Callable[[Any, Fields], Any]
    img2img: Callable[[Any, bytes, bytes | None, Fields], Any]
    model_status: int = 400
    extra: dict[str, Any] = field(default_factory=dict)

    def name_of(self, f: str) -> str:
        return self.names.get(f, f)


def _cf_img(c: Any, image: bytes, mask: bytes | None, extra: Fields) -> Any:
    body = {"prompt": "x", "num_steps": 2, "image": list(image), **extra}
    if mask is not None:
        body["mask"] = list(mask)
    return _json(c, "/ai/run/sd15", body)


def _oai_img(c: Any, image: bytes, mask: bytes | None, extra: Fields) -> Any:
    files = [("image", ("in.png", image, "image/png"))]
    if mask is not None:
        files.append(("mask", ("mask.png", mask, "image/png")))
    return c.post("/v1/images/edits", files=files, data={"prompt": "x", "steps": "2", "response_format": "b64_json",
                                                         "model": "sd15", **{k: str(v) for k, v in extra.items()}})


def _a1111_img(c: Any, image: bytes, mask: bytes | None, extra: Fields) -> Any:
    body = {"steps": 2, "init_images": [_b64(image)], "width": 64, "height": 64, **extra}
    if mask is not None:
        body["mask"] = _b64(mask)
    return _json(c, "/sdapi/v1/img2img", body)


def _ml_img(c: Any, image: bytes, mask: bytes | None, extra: Fields) -> Any:
    body = {"prompt": "x", "num_inference_steps": "2", "init_image": "data:image/png;base64," + _b64(image), **extra}
    if mask is None:
        return _json(c, "/api/v3/img2img", body)
    return _json(c, "/api/v3/inpaint", {**body, "mask_image": _b64(mask)})


def _native_img(c: Any, image: bytes, mask: bytes | None, extra: Fields) -> Any:
    body = {"model": "sd15", "prompt": "x", "steps": 2, "image": _b64(image), **extra}
    if mask is not None:
        body["mask"] = _b64(mask)
    return _json(c, "/v1/jobs", body)


def _openai_mask(mask: bytes) -> bytes:
    """White-repaint mask -> OpenAI's: transparent where to edit."""
    m = Image.open(io.BytesIO(mask)).convert("L")
    rgba = Image.new("RGBA", m.size, (0, 0, 0, 255))
    rgba.putalpha(m.point(lambda v: 0 if v > 127 else 255))
    return _encode(rgba)


DIALECTS = [
    Dialect("workers_ai", "/ai/run/sd15", "/ai/run/sd15", {"steps": "num_steps", "model": "model"},
            {"prompt": "x", "width": 256, "height": 256, "num_steps": 2},
            lambda c, b: _json(c, f"/ai/run/{b.pop('model', 'sd15') if isinstance(b, dict) else 'sd15'}", b), _cf_img),
    Dialect("openai", "/v1/images/generations", "/v1/images/edits",
            {"width": "size", "height": "size", "image": "image", "mask": "mask"},
            {"prompt": "x", "size": "64x64", "steps": 2, "model": "sd15", "response_format": "b64_json"},
            lambda c, b: _json(c, "/v1/images/generations", b), _oai_img, model_status=404,
            extra={"mask_transform": _openai_mask}),
    Dialect("a1111", "/sdapi/v1/txt2img", "/sdapi/v1/img2img",
            {"guidance": "cfg_scale", "sampler": "sampler_name", "image": "init_images", "strength": "denoising_strength",
             "model": "override_settings.sd_model_checkpoint"},
            {"prompt": "x", "width": 64, "height": 64, "steps": 2},
            lambda c, b: _json(c, "/sdapi/v1/txt2img", b), _a1111_img),
    Dialect("modelslab", "/api/v3/text2img", "/api/v3/img2img",
            {"steps": "num_inference_steps", "guidance": "guidance_scale", "model": "model_id", "sampler": "scheduler",
             "image": "init_image", "mask": "mask_image"},
            {"prompt": "x", "width": "64", "height": "64", "num_inference_steps": "2"},
            lambda c, b: _json(c, "/api/v3/text2img", b), _ml_img),
    Dialect("native", "/v1/jobs", "/v1/jobs", {"sampler": "scheduler"},
            {"model": "sd15", "prompt": "x", "width": 64, "height": 64, "steps": 2},
            lambda c, b: _json(c, "/v1/jobs", b), _native_img),
]
BY_NAME = {d.name: d for d in DIALECTS}
IDS = [d.name for d in DIALECTS]


@pytest.fixture(scope="module")
def c(settings, engine, tmp_path_factory) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """One app for the whole catalogue (ModelsLab waits for its jobs): the point is also that
    it keeps serving after all of it."""
    with job_client(settings, engine, tmp_path_factory.mktemp("catalogue"), modelslab_wait_s=120) as client:
        client.raise_server_exceptions = False
        yield client


def _images(c: Any, d: Dialect, r: Any) -> list[Image.Image]:
    """The images of a successful answer, whatever the dialect's shape (native: waits for the job)."""
    assert r.status_code in (200, 201), (d.name, r.status_code, r.text[:500])
    if d.name == "workers_ai":
        return [Image.open(io.BytesIO(r.content))]
    body = r.json()
    if d.name == "openai":
        return [Image.open(io.BytesIO(base64.b64decode(i["b64_json"]))) for i in body["data"]]
    if d.name == "a1111":
        return [Image.open(io.BytesIO(base64.b64decode(i))) for i in body["images"]]
    if d.name == "modelslab":
        assert body["status"] == "success", body
        return [Image.open(io.BytesIO(c.get("/" + u.split("/", 3)[3]).content)) for u in body["output"]]
    deadline = time.time() + 120
    while (job := c.get(f"/v1/jobs/{body['id']}").json())["status"] in ("queued", "running"):
        assert time.time() < deadline
        time.sleep(0.05)
    assert job["status"] == "succeeded", job
    return [Image.open(io.BytesIO(c.get("/" + o["url"].split("/", 3)[3]).content)) for o in job["outputs"]]


def _txt2img(c: Any, d: Dialect, **fields: Any) -> Any:
    body = {**d.base}
    for k, v in fields.items():
        if k == "model" and d.name == "a1111":
            body["override_settings"] = {"sd_model_checkpoint": v}
        elif k in ("width", "height") and d.name == "openai":
            body["size"] = f"{fields.get('width', 64)}x{fields.get('height', 64)}"
        else:
            body[d.name_of(k)] = v
    return d.txt2img(c, body)


# -- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(VALID_IMAGES))
@pytest.mark.parametrize("dialect", IDS)
def test_unusual_but_valid_images_work(c, dialect: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME[dialect]
    images = _images(c, d, d.img2img(c, VALID_IMAGES[kind](), None, {}))
    assert [im.size for im in images] == [(64, 64)]


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
@pytest.mark.parametrize("dialect", IDS)
def test_bad_images_name_the_image_field(c, dialect: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME[dialect]
    make, status = BAD_IMAGES[kind]
    t0 = time.monotonic()
    r = d.img2img(c, make(), None, {})
    assert_names_field(d.img_path, r, d.name_of("image"), status)
    assert time.monotonic() - t0 < 5  # a bomb is refused from its header, not decoded


@pytest.mark.parametrize("dialect", IDS)
def test_bad_masks_name_the_mask_field(c, dialect: str) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME[dialect]
    fix = d.extra.get("mask_transform", lambda m: m)
    path = "/api/v3/inpaint" if dialect == "modelslab" else d.img_path
    other_size = fix(mask_bytes((128, 128), (0, 0, 64, 64)))
    if dialect == "a1111":  # A1111 resizes the mask to the processing size, as upstream does
        assert [im.size for im in _images(c, d, d.img2img(c, png_bytes(), other_size, {}))] == [(64, 64)]
    else:
        assert_names_field(path, d.img2img(c, png_bytes(), other_size, {}), d.name_of("mask"))
    for mask, status in ((b"not a mask", 400), (header_bomb(), 413)):
        assert_names_field(path, d.img2img(c, png_bytes(), mask, {}), d.name_of("mask"), status)
    # ... and a mask of the right size inpaints.
    assert [im.size for im in _images(c, d, d.img2img(c, png_bytes(), fix(mask_bytes()), {}))] == [(64, 64)]


@pytest.mark.parametrize("dialect", IDS)
def test_an_input_image_off_the_8_pixel_grid_is_rounded_down(c, dialect: str) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME[dialect]
    extra = {"width": 72, "height": 64} if dialect == "a1111" else {}  # A1111 sizes come from the request
    images = _images(c, d, d.img2img(c, png_bytes((75, 69)), None, extra))
    assert [im.size for im in images] == [(72, 64)]


# -- sizes, numbers, types, names ----------------------------------------------------------------


@pytest.mark.parametrize("dialect", [i for i in IDS if i != "a1111"])
def test_sizes_off_the_8_pixel_grid_are_rejected_not_rounded(c, dialect: str) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME[dialect]
    side = 260 if dialect == "workers_ai" else 100  # Workers AI's smallest side is 256
    for f in ("width", "height"):
        assert_names_field(d.path, _txt2img(c, d, **{f: side}), d.name_of(f))


def test_a1111_rounds_sides_off_the_grid_down_as_its_latents_do(c) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME["a1111"]
    assert [im.size for im in _images(c, d, _txt2img(c, d, width=71, height=64))] == [(64, 64)]


NON_FINITE = ["NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize("token", NON_FINITE + ["-2"])
@pytest.mark.parametrize("f", ["steps", "guidance", "seed", "width"])
@pytest.mark.parametrize("dialect", IDS)
def test_nan_infinity_and_negative_numbers(c, dialect: str, f: str, token: str) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME[dialect]
    if dialect == "openai" and f == "width":
        body = {**d.base, "size": f"{token}x64"}
    else:
        body = {**d.base, d.name_of(f): "__X__"}
    raw = json.dumps(body).replace('"__X__"', token).encode()
    assert_names_field(d.path, d.txt2img(c, raw), d.name_of(f))
    if dialect == "modelslab":  # numbers as strings, the way ModelsLab clients send them
        assert_names_field(d.path, d.txt2img(c, {**d.base, d.name_of(f): token.lower()}), d.name_of(f))


WRONG_TYPES: list[tuple[str, Any]] = [("prompt", 5), ("prompt", ["a"]), ("prompt", {"text": "a"}), ("width", "wide"),
                                      ("width", [64]), ("steps", {"n": 2}), ("seed", 1.5), ("seed", "lucky"),
                                      ("guidance", "high"), ("guidance", [7])]


@pytest.mark.parametrize("f, value", WRONG_TYPES, ids=[f"{f}={v!r}" for f, v in WRONG_TYPES])
@pytest.mark.parametrize("dialect", IDS)
def test_wrong_types(c, dialect: str, f: str, value: Any) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME[dialect]
    if dialect == "openai" and f == "width":
        body = {**d.base, "size": value}
    else:
        body = {**d.base, d.name_of(f): value}
    assert_names_field(d.path, d.txt2img(c, body), d.name_of(f))


@pytest.mark.parametrize("dialect", IDS)
def test_unknown_models(c, dialect: str) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME[dialect]
    path = "/ai/run/no-such-model" if dialect == "workers_ai" else d.path
    r = _txt2img(c, d, model="no-such-model")
    assert_names_field(path, r, "no-such-model" if dialect == "workers_ai" else d.name_of("model"), d.model_status)


@pytest.mark.parametrize("dialect", ["a1111", "modelslab", "native"])  # Workers AI and OpenAI have no sampler field
def test_unknown_samplers(c, dialect: str) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME[dialect]
    assert_names_field(d.path, _txt2img(c, d, sampler="Euler z"), d.name_of("sampler"))


PROMPTS_OK = ["café — 東京の夜 — ночь", "a fox 🦊 in the 🌊, 👩🏽‍🚀", "\u202eright-to-left\u200b zero-width"]


@pytest.mark.parametrize("prompt", PROMPTS_OK, ids=["unicode", "emoji", "bidi-zero-width"])
@pytest.mark.parametrize("dialect", IDS)
def test_unicode_and_emoji_prompts_work(c, dialect: str, prompt: str) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME[dialect]
    assert len(_images(c, d, _txt2img(c, d, prompt=prompt))) == 1


@pytest.mark.parametrize("raw", ['"a\\u0000b"', '"\\ud83e"', '"x\\udc00y"'], ids=["nul", "lone-high-surrogate",
                                                                                  "lone-low-surrogate"])
@pytest.mark.parametrize("f", ["prompt", "negative_prompt"])
@pytest.mark.parametrize("dialect", IDS)
def test_nul_and_broken_unicode_in_prompts(c, dialect: str, f: str, raw: str) -> None:  # type: ignore[no-untyped-def]
    d = BY_NAME[dialect]
    body = json.dumps({**d.base, d.name_of(f): "__X__"}).replace('"__X__"', raw).encode()
    assert_names_field(d.path, d.txt2img(c, body), d.name_of(f))


def test_the_server_still_serves_after_the_catalogue(c) -> None:  # type: ignore[no-untyped-def]
    assert c.get("/healthz").status_code == 200
    for d in DIALECTS:
        assert len(_images(c, d, _txt2img(c, d))) == 1


# -- oversized bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", IDS)
def test_oversized_bodies_are_413_in_the_dialects_shape(settings, engine, dialect: str) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    d = BY_NAME[dialect]
    body = json.dumps({**d.base, "prompt": "x" * 200_000}).encode()

    def chunked() -> Iterator[bytes]:
        for i in range(0, len(body), 16_384):
            yield body[i:i + 16_384]

    with TestClient(make_app(settings, engine, max_body_mb=0.1), raise_server_exceptions=False) as small:
        for content in (body, chunked()):  # declared Content-Length, then chunked
            r = small.post(d.path, content=content, headers={"content-type": "application/json"})
            assert_names_field(d.path, r, "body", 413)
        if dialect == "openai":
            r = small.post("/v1/images/edits", files={"image": ("a.png", b"\0" * 200_000)}, data={"prompt": "x"})
            assert_names_field("/v1/images/edits", r, "body", 413)
        assert small.get("/healthz").status_code == 200


# -- ComfyUI: graphs and files ----------------------------------------------------------------------
# ComfyUI has no flat request fields: a request is a graph, and its errors name the node and
# input at fault in ``node_errors`` (or, for the routes' own fields, ``extra_info.input_name``).

_COMFY: dict[str, Any] = {
    "3": {"class_type": "KSampler", "inputs": {
        "seed": 1, "steps": 2, "cfg": 7, "sampler_name": "euler", "scheduler": "normal", "denoise": 1,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


def _comfy(**edits: Any) -> dict[str, Any]:
    """The graph with ``node__input=value`` edits (None removes the node or the input)."""
    g = json.loads(json.dumps(_COMFY))
    for key, value in edits.items():
        node, _, name = key.partition("__")
        if not name:
            g.pop(node) if value is None else g.__setitem__(node, value)
        elif value is None:
            del g[node]["inputs"][name]
        else:
            g[node]["inputs"][name] = value
    return g


# (graph, node id at fault or None, what the error names)
COMFY_BAD_GRAPHS: list[tuple[str, Any, str | None, str]] = [
    ("cycle", _comfy(**{"6__clip": ["8", 0], "8__vae": ["6", 0]}), None, ""),
    ("link-to-missing-node", _comfy(**{"8__samples": ["99", 0]}), "8", "samples"),
    ("link-to-missing-output", _comfy(**{"8__samples": ["3", 7]}), "8", "samples"),
    ("wrong-link-type", _comfy(**{"8__samples": ["4", 0]}), "8", "samples"),
    ("malformed-link", _comfy(**{"8__samples": ["3"]}), "8", "samples"),
    ("unknown-node", _comfy(**{"10": {"class_type": "NoSuchNode", "inputs": {}}}), "10", "NoSuchNode"),
    ("no-class-type", _comfy(**{"10": {"inputs": {}}}), None, ""),  # a top-level error, as upstream
    ("missing-input", _comfy(**{"3__steps": None}), "3", "steps"),
    ("wrong-type", _comfy(**{"3__steps": "many"}), "3", "steps"),
    ("nan-cfg", _comfy(**{"3__cfg": float("nan")}), "3", "cfg"),
    ("unknown-sampler", _comfy(**{"3__sampler_name": "euler z"}), "3", "sampler_name"),
    ("unknown-checkpoint", _comfy(**{"4__ckpt_name": "nope.safetensors"}), "4", "ckpt_name"),
    ("width-too-small", _comfy(**{"5__width": 8}), "5", "width"),
    ("no-outputs", _comfy(**{"9": None}), None, ""),
    ("unknown-upload", _comfy(**{"10": {"class_type": "LoadImage", "inputs": {"image": "nope.png"}},
                                 "5": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}}),
     "10", "image"),
]


@pytest.mark.parametrize("case, graph, node, names", COMFY_BAD_GRAPHS, ids=[c[0] for c in COMFY_BAD_GRAPHS])
def test_comfyui_bad_graphs_are_400_naming_node_and_input(c, case: str, graph: Any, node: str | None,
                                                          names: str) -> None:  # type: ignore[no-untyped-def]
    r = _json(c, "/prompt", {"prompt": graph})
    assert r.status_code == 400, (case, r.status_code, r.text[:500])
    body = ERROR_MODELS["comfyui"].model_validate(r.json())
    assert body.error.message  # type: ignore[attr-defined]
    if node is not None:
        assert node in body.node_errors, (case, r.text[:800])  # type: ignore[attr-defined]
        assert names in json.dumps(body.node_errors[node]), (case, r.text[:800])  # type: ignore[attr-defined]


COMFY_BAD_BODIES: list[tuple[str, Any, str]] = [
    ("no-prompt", {}, "prompt"), ("prompt-not-an-object", {"prompt": [1, 2]}, "prompt"),
    ("prompt-a-string", {"prompt": "draw a cat"}, "prompt"), ("bad-prompt-id", {"prompt": _COMFY, "prompt_id": "1"},
                                                              "prompt_id"),
    ("client-id-number", {"prompt": _COMFY, "client_id": 5}, "client_id"),
    ("not-json", b"{nope", "body"),
]


@pytest.mark.parametrize("case, body, field", COMFY_BAD_BODIES, ids=[c[0] for c in COMFY_BAD_BODIES])
def test_comfyui_bad_bodies_name_the_field(c, case: str, body: Any, field: str) -> None:  # type: ignore[no-untyped-def]
    assert_names_field("/prompt", _json(c, "/prompt", body), field)


def test_comfyui_files_and_the_server_keeps_serving(c) -> None:  # type: ignore[no-untyped-def]
    for params, field, status in [({"filename": "../../sdserve.db"}, "filename", 400),
                                  ({"filename": "a.png", "subfolder": "../../"}, "subfolder", 400),
                                  ({"filename": "a.png", "type": "../"}, "type", 400),
                                  ({"filename": "nope.png"}, "nope.png", 404)]:
        assert_names_field("/view", c.get("/view", params=params), field, status)
    for make, status in BAD_IMAGES.values():
        r = c.post("/upload/image", files={"image": ("x.png", make(), "image/png")})
        assert_names_field("/upload/image", r, "image", status)
    ok = _json(c, "/prompt", {"prompt": _COMFY})
    assert ok.status_code == 200, ok.text
