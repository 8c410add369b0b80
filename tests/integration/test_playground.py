"""The playground over HTTP: the page and every asset it loads are served by sdserve (none
from elsewhere), with the right types, without a key even when the API needs one; static
serving cannot leave its directory; the catalog and bootstrap endpoints say what the page needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sdserve.api.playground.router import STATIC_DIR, STATIC_PATH
from tests.conftest import make_app

ROOT = Path(__file__).resolve().parents[2]
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# Any absolute or protocol-relative URL to another host. The SVG namespace is a name, never fetched.
EXTERNAL = re.compile(r"(?:https?:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+[^\s\"'<>)]*", re.I)
XML_NAMESPACES = {"http://www.w3.org/2000/svg"}


@pytest.fixture
def keyed(settings, engine):  # type: ignore[no-untyped-def]
    with TestClient(make_app(settings, engine, api_keys=["k-secret"])) as c:
        yield c


def referenced_assets(client: TestClient) -> set[str]:
    """Every same-site path the page loads: its src/href attributes, ES module imports, CSS url()s."""
    page = client.get("/").text
    todo = set(re.findall(r'(?:src|href)="(/playground/static/[^"]+)"', page))
    seen: set[str] = set()
    while todo:
        path = todo.pop()
        seen.add(path)
        text = client.get(path).text
        base = path.rsplit("/", 1)[0]
        for rel in re.findall(r'(?:import|from)\s*["\'](\./[^"\']+)["\']', text) + \
                re.findall(r'url\(["\']?(\./[^)"\']+)["\']?\)', text):
            target = f"{base}/{rel[2:]}"
            if target not in seen:
                todo.add(target)
    return seen


def test_page_and_every_asset_are_served_with_their_types(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "DEMO MODE" in page.text and 'id="demo-banner"' in page.text
    assets = referenced_assets(client)
    # The page's own modules are all reachable from it, and nothing in static/ is orphaned.
    assert assets == {f"{STATIC_PATH}/{p.name}" for p in STATIC_DIR.iterdir() if p.name != "index.html"}
    for path in assets:
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith(TYPES[Path(path).suffix]), (path, r.headers["content-type"])


def test_no_asset_refers_to_another_host(client: TestClient) -> None:
    texts = {"/": client.get("/").text}
    texts.update({p.name: p.read_text(encoding="utf-8") for p in STATIC_DIR.iterdir()})
    for name, text in texts.items():
        found = [u for u in EXTERNAL.findall(text) if u not in XML_NAMESPACES]
        assert not found, f"{name} refers to {found}: every asset must come from sdserve"


def test_demo_banner_only_in_demo_mode(settings, engine) -> None:  # type: ignore[no-untyped-def]
    with TestClient(make_app(settings, engine, demo=False)) as c:
        page = c.get("/")
        assert page.status_code == 200 and "DEMO MODE" not in page.text
        cfg = c.get("/playground/config").json()
        assert cfg["demo"] is False and cfg["demo_warning"] is None


def test_with_keys_the_page_is_public_and_the_api_is_not(keyed: TestClient) -> None:
    assert keyed.get("/").status_code == 200
    for path in referenced_assets(keyed):
        assert keyed.get(path).status_code == 200, path
    cfg = keyed.get("/playground/config")
    assert cfg.status_code == 200 and cfg.json()["auth_required"] is True
    assert keyed.get("/v1/catalog").status_code == 401
    assert keyed.get("/v1/catalog", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = keyed.get("/v1/catalog", headers={"Authorization": "Bearer k-secret"})
    assert ok.status_code == 200 and ok.json()["data"]


def test_open_server_says_no_key_is_needed(client: TestClient) -> None:
    cfg = client.get("/playground/config").json()
    assert cfg["auth_required"] is False and cfg["demo"] is True and "DEMO MODE" in cfg["demo_warning"]
    labels = {s["name"]: s["a1111"] for s in cfg["schedulers"]}
    assert labels["dpmpp_2m_karras"] == "DPM++ 2M" and labels["euler_trailing"] == "Euler SGM Uniform"
    # The model's own spacing has no A1111 label: the engine's name, which the A1111 dialect
    # also takes, so "copy as curl" reproduces the image there too.
    assert labels["dpmpp_2m"] == "dpmpp_2m"


def test_config_splits_each_scheduler_into_sampler_and_schedule(client: TestClient) -> None:
    # The page's two pickers: every engine name is one sampler on one schedule (None: the model's own).
    split = {s["name"]: (s["sampler"], s["schedule"]) for s in client.get("/playground/config").json()["schedulers"]}
    assert split["dpmpp_2m"] == ("dpmpp_2m", None) and split["dpmpp_2m_karras"] == ("dpmpp_2m", "karras")
    assert split["dpmpp_2m_sde_heun_beta"] == ("dpmpp_2m_sde_heun", "beta")
    assert split["dpmpp_2m_sde"] == ("dpmpp_2m_sde", None)
    assert all(name == (f"{b}_{k}" if k else b) for name, (b, k) in split.items())


def test_addon_families_are_read_from_the_files(client: TestClient, keyed: TestClient) -> None:
    families = client.get("/playground/addon-families").json()
    assert families["controlnet"] == {"tiny-sd15-canny": "sd15", "tiny-sd15-canny-single": "sd15",
                                      "tiny-sdxl-canny": "sdxl", "tiny-sdxl-canny-single": "sdxl"}
    assert set(families["ip_adapter"]) == {"tiny-ip-adapter_sd15", "sdxl_models/tiny-ip-adapter_sdxl"}
    # It lists the server's files: behind the key, as GET /v1/addons is.
    assert keyed.get("/playground/addon-families").status_code == 401
    assert keyed.get("/playground/addon-families", headers={"Authorization": "Bearer k-secret"}).status_code == 200


def test_catalog_lists_tasks_and_defaults(client: TestClient) -> None:
    models = {m["id"]: m for m in client.get("/v1/catalog").json()["data"]}
    assert len(models) == 6  # the five Workers AI models and the SDXL refiner (img2img only)
    assert models["stabilityai/stable-diffusion-xl-refiner-1.0"]["tasks"] == ["img2img"]
    sd15 = models["@cf/runwayml/stable-diffusion-v1-5-img2img"]
    assert sd15["tasks"] == ["txt2img", "img2img", "inpaint"] and "sd15" in sd15["aliases"]
    assert sd15["defaults"] == {"width": 256, "height": 256, "steps": 20, "guidance": 7.5,
                                "scheduler": "dpmpp_2m", "strength": 0.75}
    assert sd15["available"] is True
    assert models["@cf/runwayml/stable-diffusion-v1-5-inpainting"]["tasks"] == ["inpaint"]
    assert models["@cf/bytedance/stable-diffusion-xl-lightning"]["defaults"]["scheduler"] == "euler_trailing"


@pytest.mark.parametrize("path", [
    "/playground/static/../router.py",
    "/playground/static/%2e%2e/router.py",
    "/playground/static/..%2frouter.py",
    "/playground/static/%2e%2e%2f%2e%2e%2fapp.py",
    "/playground/static//etc/passwd",
    "/playground/static/..%5crouter.py",
])
def test_static_serving_stays_in_its_directory(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert "def " not in r.text and "root:" not in r.text


def test_static_files_ship_in_the_wheel() -> None:
    # package-data globs one level: the static folder must stay flat to be covered by it.
    assert all(p.is_file() for p in STATIC_DIR.iterdir())
    assert '"api/playground/static/*"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
