"""Every example of the seed documents (../shared/seeds/*.txt), sent as printed against
``sdserve serve --demo``: only the host is replaced (a loopback server), and the init image
URL by a loopback file server.

The server is demo mode as a user gets it: the engine writes the demo architecture of each
tiny model on first use (engine.tiny, ``demo=True``), so the documented sizes (1024x1024 on
SD 1.5 in the aigateway example) answer in seconds on a CPU. The test suite's own tiny models
(whose goldens are pinned) are not used here.

Seeds: 000 Workers AI stable-diffusion-v1-5-img2img, 001 Workers AI text-to-image task page,
002 Workers AI stable-diffusion-xl-base-1.0, 003 aigateway (OpenAI-compatible gateway),
004 stablediffusionapi v3 img2img.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import make_app, mask_bytes, png_bytes
from tests.integration.live_server import live_server
from tests.integration.test_modelslab import loopback_server
from tests.jobs_support import make_service

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CF_ACCOUNT = "0123456789abcdef0123456789abcdef"
CF_TOKEN = "cf-token"  # the server is open: any bearer token passes, as the examples send one


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Settings and engine of a fresh `serve --demo` data dir (demo models written on first use)."""
    from sdserve.compose import build_engine
    from sdserve.config import Settings

    settings = Settings(demo=True, data_dir=tmp_path_factory.mktemp("seed-demo"), device="cpu", dtype="float32",
                        allow_private_urls=True,  # the init image comes from a loopback server
                        modelslab_wait_s=600)  # answer 'success' however busy this machine is
    return settings, build_engine(settings)


@pytest.fixture(scope="module")
def host(demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The base URL that replaces api.cloudflare.com, api.aigateway.sh and stablediffusionapi.com."""
    from sdserve.api.app import build_app

    settings, engine = demo
    s, service = make_service(settings, engine, tmp_path_factory.mktemp("seed-jobs"))
    with live_server(build_app(s, service)) as url:
        yield url


def _image(data: bytes) -> Image.Image:
    assert data.startswith(PNG_SIGNATURE)
    return Image.open(io.BytesIO(data))


def _post(url: str, **kw: Any) -> httpx.Response:
    return httpx.post(url, timeout=600, **kw)


# -- 000 / 001 / 002: Workers AI ----------------------------------------------------------


def test_000_worker_example_img2img_with_image_as_byte_values(host: str) -> None:
    # const inputs = { prompt: "Change to a lion", image: [...new Uint8Array(await exampleInputImage.arrayBuffer())] };
    # env.AI.run("@cf/runwayml/stable-diffusion-v1-5-img2img", inputs) is this call over REST.
    dog = png_bytes((512, 512), (150, 110, 60))
    inputs = {"prompt": "Change to a lion", "image": list(dog)}
    r = _post(f"{host}/client/v4/accounts/{CF_ACCOUNT}/ai/run/@cf/runwayml/stable-diffusion-v1-5-img2img",
              json=inputs, headers={"Authorization": f"Bearer {CF_TOKEN}"})
    assert r.status_code == 200, r.text
    # The Worker returns these bytes as "content-type: image/png": they are a PNG.
    assert r.headers["content-type"] == "image/png"
    img = _image(r.content)
    assert img.size == (512, 512)  # img2img keeps the input's size
    assert "Denoising strength: 1.0" in img.text["parameters"]  # the schema's default strength


@pytest.mark.parametrize("model", ["@cf/runwayml/stable-diffusion-v1-5-img2img",  # 000
                                   "@cf/stabilityai/stable-diffusion-xl-base-1.0"])  # 001, 002
def test_curl_examples(host: str, model: str) -> None:
    # curl https://api.cloudflare.com/client/v4/accounts/$CLOUDFLARE_ACCOUNT_ID/ai/run/<model> \
    #   -X POST -H "Authorization: Bearer $CLOUDFLARE_API_TOKEN" -d '{ "prompt": "cyberpunk cat" }'
    # curl -d without -H Content-Type sends application/x-www-form-urlencoded.
    r = _post(f"{host}/client/v4/accounts/{CF_ACCOUNT}/ai/run/{model}", content=b'{ "prompt": "cyberpunk cat" }',
              headers={"Authorization": f"Bearer {CF_TOKEN}", "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert _image(r.content).size == (256, 256)  # demo mode's default size


def test_001_002_sdxl_worker_example_gets_png_whatever_the_worker_labels_it(host: str) -> None:
    # 001's Worker labels the bytes "image/png", 002's "image/jpg": both pass through what
    # ai.run returned, and that is a PNG (the output schema's contentType).
    r = _post(f"{host}/ai/run/@cf/stabilityai/stable-diffusion-xl-base-1.0", json={"prompt": "cyberpunk cat"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.content.startswith(PNG_SIGNATURE)


def test_001_full_input_schema_with_the_object_forms(host: str) -> None:
    # image and mask in the task schema's object form, with every other documented field.
    image, mask = png_bytes((256, 256)), mask_bytes((256, 256), (64, 64, 192, 192))
    inputs = {"prompt": "cyberpunk cat", "negative_prompt": "blurry", "height": 256, "width": 256,
              "image": {"image": list(image)}, "mask": {"mask": list(mask)},
              "num_steps": 20, "strength": 1, "guidance": 7.5, "seed": 42}
    r = _post(f"{host}/ai/run/@cf/runwayml/stable-diffusion-v1-5-inpainting", json=inputs)
    assert r.status_code == 200, r.text
    params = _image(r.content).text["parameters"]
    assert "Steps: 20" in params and "Seed: 42" in params and "CFG scale: 7.5" in params
    # The array form and image_b64 give the same image.
    arrays = {**inputs, "image": list(image), "mask": list(mask)}
    assert _post(f"{host}/ai/run/@cf/runwayml/stable-diffusion-v1-5-inpainting", json=arrays).content == r.content
    b64 = {k: v for k, v in arrays.items() if k != "image"} | {"image_b64": base64.b64encode(image).decode()}
    assert _post(f"{host}/ai/run/@cf/runwayml/stable-diffusion-v1-5-inpainting", json=b64).content == r.content


@pytest.mark.parametrize(("inputs", "field"), [
    ({"num_steps": 21}, "num_steps"),  # maximum: 20
    ({"width": 255}, "width"),  # minimum: 256
    ({"height": 2056}, "height"),  # maximum: 2048
    ({"image": [256]}, "image"),  # 8-bit unsigned values
    ({"image": {"img": [1]}}, "image"),
    ({"prompt": ""}, "prompt"),  # minLength: 1
])
def test_workers_ai_schema_limits_are_400_naming_the_field(host: str, inputs: dict[str, Any], field: str) -> None:
    r = _post(f"{host}/ai/run/@cf/runwayml/stable-diffusion-v1-5-img2img", json={"prompt": "cyberpunk cat", **inputs})
    assert r.status_code == 400, r.text
    err = r.json()["errors"][0]
    assert err["code"] == 5006 and field in err["message"]


# -- 003: aigateway (OpenAI-compatible) ----------------------------------------------------

AIGATEWAY_MODEL = "runwayml/stable-diffusion-v1-5-img2img"


def test_003_curl_quickstart(host: str) -> None:
    # curl https://api.aigateway.sh/v1/images/generations -H "Authorization: Bearer $AIGATEWAY_API_KEY" \
    #   -H "Content-Type: application/json" -d '{"model":"runwayml/stable-diffusion-v1-5-img2img","prompt":"a cyberpunk cat"}'
    r = _post(f"{host}/v1/images/generations",
              content=b'{"model":"runwayml/stable-diffusion-v1-5-img2img","prompt":"a cyberpunk cat"}',
              headers={"Authorization": "Bearer sk-aig-demo", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["created"], int) and len(body["data"]) == 1
    assert _image(httpx.get(body["data"][0]["url"]).content).size == (256, 256)


@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_003_request_body_at_1024(host: str, response_format: str) -> None:
    body = {"model": "runwayml/stable-diffusion-v1-5-img2img", "prompt": "A cyberpunk cat at sunset, cinematic lighting",
            "n": 1, "size": "1024x1024", "response_format": response_format}
    r = _post(f"{host}/v1/images/generations", json=body, headers={"Authorization": "Bearer sk-aig-demo"})
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    data = httpx.get(item["url"]).content if response_format == "url" else base64.b64decode(item["b64_json"])
    assert _image(data).size == (1024, 1024)


def test_003_python_quickstart_with_the_openai_sdk(host: str) -> None:
    client = openai.OpenAI(base_url=f"{host}/v1", api_key="sk-aig-...", timeout=600)
    r = client.images.generate(
        model="runwayml/stable-diffusion-v1-5-img2img",
        prompt="a cyberpunk cat at sunset",
        size="1024x1024",
    )
    assert r.data[0].url is not None
    assert _image(httpx.get(r.data[0].url).content).size == (1024, 1024)
    # The gateway's clients find the model under the same name in the model list.
    assert AIGATEWAY_MODEL in [m.id for m in client.models.list()]
    assert client.models.retrieve(AIGATEWAY_MODEL).id == AIGATEWAY_MODEL


@pytest.mark.parametrize("slug", ["stabilityai/stable-diffusion-xl-base-1.0", "bytedance/stable-diffusion-xl-lightning",
                                  "lykon/dreamshaper-8-lcm"])
def test_003_every_model_answers_to_its_slug(host: str, slug: str) -> None:
    r = _post(f"{host}/v1/images/generations", json={"model": slug, "prompt": "a cyberpunk cat", "size": "256x256",
                                                     "response_format": "b64_json"})
    assert r.status_code == 200, r.text
    img = _image(base64.b64decode(r.json()["data"][0]["b64_json"]))
    assert img.size == (256, 256) and f"Model: @cf/{slug}" in img.text["parameters"]


def test_003_inpainting_slug_edits(host: str) -> None:
    oa = openai.OpenAI(base_url=f"{host}/v1", api_key="sk-aig-...", timeout=600, max_retries=0)
    image = Image.new("RGBA", (256, 256), (200, 40, 40, 255))
    image.paste((0, 0, 0, 0), (64, 64, 192, 192))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    res = oa.images.edit(model="runwayml/stable-diffusion-v1-5-inpainting", image=("in.png", buf.getvalue()),
                         prompt="a cyberpunk cat", response_format="b64_json")
    assert _image(base64.b64decode(res.data[0].b64_json or "")).size == (256, 256)


@pytest.fixture(scope="module")
def gateway(demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    """A keyed server speaking the gateway error vocabulary (openai_error_types = "gateway")."""
    from sdserve.api.app import build_app

    settings, engine = demo
    s, service = make_service(settings, engine, tmp_path_factory.mktemp("gateway-jobs"),
                              openai_error_types="gateway", api_keys=["sk-aig-right"])
    with live_server(build_app(s, service)) as url:
        yield url, service


def test_003_error_table_in_the_gateway_vocabulary(gateway: tuple[str, Any]) -> None:
    url, service = gateway

    def client(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=600)

    gen = {"model": AIGATEWAY_MODEL, "prompt": "a cyberpunk cat", "size": "256x256"}
    with pytest.raises(openai.AuthenticationError) as e401:
        client("sk-aig-wrong").images.generate(**gen)
    assert (e401.value.status_code, e401.value.type) == (401, "authentication_error")
    _, spent = service.keys.create("wallet", credits=0)
    with pytest.raises(openai.APIStatusError) as e402:
        client(spent).images.generate(**gen)
    assert (e402.value.status_code, e402.value.type) == (402, "insufficient_credits")
    with pytest.raises(openai.NotFoundError) as e404:
        client("sk-aig-right").images.generate(**{**gen, "model": "runwayml/no-such-model"})
    assert (e404.value.status_code, e404.value.type, e404.value.param) == (404, "not_found", "model")
    with pytest.raises(openai.NotFoundError) as e404:
        client("sk-aig-right").models.retrieve("runwayml/no-such-model")
    assert e404.value.type == "not_found"
    _, limited = service.keys.create("burst", rate_limit=1)
    assert len(client(limited).models.list().data) == 6  # the catalog's six models
    with pytest.raises(openai.RateLimitError) as e429:
        client(limited).models.list()
    assert (e429.value.status_code, e429.value.type) == (429, "rate_limit_error")
    assert int(e429.value.response.headers["retry-after"]) >= 1


def test_openai_vocabulary_is_the_default(demo) -> None:  # type: ignore[no-untyped-def]
    settings, engine = demo
    with live_server(make_app(settings, engine, api_keys=["sk-right"])) as url:
        with pytest.raises(openai.AuthenticationError) as e:
            openai.OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0).models.list()
    assert (e.value.type, e.value.code) == ("invalid_request_error", "invalid_api_key")


# -- 004: stablediffusionapi v3 img2img -----------------------------------------------------

# The "Body" example, exactly as printed but for the init image's host.
V3_BODY = """{
    "key": "",
    "prompt": "a cat sitting on a bench",
    "negative_prompt": null,
    "init_image": "INIT_URL",
    "width": "512",
    "height": "512",
    "samples": "1",
    "num_inference_steps": "30",
    "safety_checker": "no",
    "enhance_prompt": "yes",
    "guidance_scale": 7.5,
    "strength": 0.7,
    "seed": null,
    "base64": "no",
    "webhook": null,
    "track_id": null
}"""
# The Java (OkHttp) tab's body: the same without "base64".
V3_JAVA_BODY = ("{\n    \"key\": \"\",\n    \"prompt\": \"a cat sitting on a bench\",\n    \"negative_prompt\": null,\n"
                "    \"init_image\": \"INIT_URL\",\n    \"width\": \"512\",\n    \"height\": \"512\",\n"
                "    \"samples\": \"1\",\n    \"num_inference_steps\": \"30\",\n    \"safety_checker\": \"no\",\n"
                "    \"enhance_prompt\": \"yes\",\n    \"guidance_scale\": 7.5,\n    \"strength\": 0.7,\n"
                "    \"seed\": null,\n    \"webhook\": null,\n    \"track_id\": null\n}")
# The example response's meta keys.
V3_META_KEYS = {"H", "W", "enable_attention_slicing", "file_prefix", "guidance_scale", "model", "n_samples",
                "negative_prompt", "outdir", "prompt", "revision", "safety_checker", "seed", "steps", "vae"}


@pytest.mark.parametrize("body", [V3_BODY, V3_JAVA_BODY], ids=["body", "java"])
def test_004_img2img_example_body_as_printed(host: str, body: str) -> None:
    # overture-creations-5sI6fQgYIuo.png is a 512x512 photo.
    with loopback_server({"/overture-creations-5sI6fQgYIuo.png": png_bytes((512, 512), (90, 120, 160))}) as (base, _):
        init_url = f"{base}/overture-creations-5sI6fQgYIuo.png"
        r = _post(f"{host}/api/v3/img2img", content=body.replace("INIT_URL", init_url).encode(),
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "success", out
    assert isinstance(out["generationTime"], float) and isinstance(out["id"], str) and out["id"]
    meta = out["meta"]
    assert V3_META_KEYS <= set(meta)
    assert (meta["H"], meta["W"], meta["n_samples"], meta["steps"], meta["guidance_scale"]) == (512, 512, 1, 30, 7.5)
    assert meta["safety_checker"] == "no" and isinstance(meta["seed"], int)  # seed null: drawn, and reported
    # enhance_prompt "yes": the server's enhancer (demo mode: a tiny one) extends the prompt,
    # visible in meta.prompt.
    assert meta["prompt"].startswith("a cat sitting on a bench ") and meta["prompt"] != "a cat sitting on a bench"
    assert "track_id" not in out and len(out["output"]) == 1
    img = _image(httpx.get(out["output"][0]).content)
    assert img.size == (512, 512) and "Denoising strength: 0.7" in img.text["parameters"]


def test_004_json_encoding_of_the_example_is_valid() -> None:
    # Guards the copies above against typos: both parse, and say the same but for base64.
    a, b = json.loads(V3_BODY), json.loads(V3_JAVA_BODY)
    assert {k: v for k, v in a.items() if k != "base64"} == b
