"""Loading weights from every place a user keeps them, offline, through the real engine.

(a) a Hugging Face hub cache entry (HF_HOME / HF_HUB_CACHE pointed at a temporary folder,
    models--org--name/snapshots/<commit>/..., refs/main, blobs) loaded by repo id, including
    SDXL-Lightning's layout (base repo + a repo holding only the UNet file);
(b) a local diffusers folder, also as a user model from the TOML config;
(c) a single-file checkpoint in the original layout, with its configs from an explicit
    folder, from a diffusers folder around it, or from the base repo in the cache;
(d) a catalog model whose weights are missing: ModelUnavailable naming `sdserve pull`,
    and over HTTP a Workers AI envelope after which the server keeps serving;
(e) ``is_available`` agreeing with what loads.

The network is blocked in every test here: loading must never reach the hub.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sdserve.engine.catalog import BUILTIN_MODELS, Catalog, Defaults, ModelSpec, WeightSource
from sdserve.engine.params import GenerationParams, input_images
from sdserve.engine.tiny import LIGHTNING_UNET_FILE
from sdserve.errors import ModelUnavailable
from tests.conftest import make_app, mask_bytes, png_bytes

SD15_BASE_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SMALL = Defaults(width=64, height=64, steps=2, guidance=7.5, scheduler="euler")


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache the libraries use, HF_HUB_OFFLINE=1, and no network at all."""
    import huggingface_hub.constants as hub

    home = tmp_path / "hf-home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these variables once, at import; the tests' process imported it
    # long ago, so its constants are pointed at the same place as a fresh process would be.
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted while loading offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return cache


def cache_repo(cache: Path, repo: str, files: dict[str, Path], blobs: bool = True) -> Path:
    """Lay ``files`` (path in repo -> source file) out as the hub cache entry of ``repo``.

    As huggingface_hub writes it: content in blobs/, the snapshot made of relative symlinks,
    and refs/main naming the snapshot's commit. ``blobs=False`` writes plain files instead
    (what a copied or hand-made cache often holds).
    """
    entry = cache / ("models--" + repo.replace("/", "--"))
    commit = hashlib.sha1(repo.encode()).hexdigest()
    snapshot = entry / "snapshots" / commit
    for rel, src in files.items():
        target = snapshot / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if blobs:
            data = src.read_bytes()
            blob = entry / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            target.symlink_to(os.path.relpath(blob, target.parent))
        else:
            shutil.copyfile(src, target)
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / "main").write_text(commit)
    return snapshot


def folder_files(folder: Path, weights: bool = True) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*"))
            if p.is_file() and (weights or p.suffix != ".safetensors")}


def spec(model_id: str, source: WeightSource, arch: str = "sd15", **kw) -> ModelSpec:  # type: ignore[no-untyped-def]
    return ModelSpec(id=model_id, arch=arch, source=source, defaults=SMALL, **kw)  # type: ignore[arg-type]


def engine_for(*specs: ModelSpec):  # type: ignore[no-untyped-def]
    from sdserve.engine.engine import Engine, EngineOptions

    return Engine(Catalog(list(specs)), EngineOptions(device="cpu", dtype="float32"))


def txt2img(engine, model: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    result = engine.generate(GenerationParams(model=model, prompt="a lighthouse", seed=5))
    assert result.images[0].size == (64, 64)
    return np.asarray(result.images[0])


@pytest.fixture(scope="module")
def reference(tiny_dir: Path) -> dict[str, np.ndarray]:
    """What the tiny folders generate: every other route to the same weights must match."""
    eng = engine_for(spec("sd15", WeightSource(path=tiny_dir / "sd15" / "base")),
                     spec("sdxl", WeightSource(path=tiny_dir / "sdxl" / "base"), arch="sdxl"),
                     spec("lightning", WeightSource(path=tiny_dir / "sdxl-lightning" / "base"), arch="sdxl",
                          unet=WeightSource(path=tiny_dir / "sdxl-lightning" / LIGHTNING_UNET_FILE)))
    return {name: txt2img(eng, name) for name in ("sd15", "sdxl", "lightning")}


# -- (a) hub cache -----------------------------------------------------------------------

@pytest.mark.parametrize("blobs", [True, False], ids=["blobs+symlinks", "plain-files"])
def test_hub_repo_loads_by_id_from_the_cache(hf_cache, tiny_dir, reference, blobs: bool) -> None:  # type: ignore[no-untyped-def]
    cache_repo(hf_cache, "org/tiny-sd15", folder_files(tiny_dir / "sd15" / "base"), blobs=blobs)
    eng = engine_for(spec("hub-model", WeightSource(repo="org/tiny-sd15")))
    assert eng.is_available("hub-model")
    assert np.array_equal(txt2img(eng, "hub-model"), reference["sd15"])


def test_lightning_layout_base_repo_plus_unet_repo(hf_cache, tiny_dir, reference) -> None:  # type: ignore[no-untyped-def]
    cache_repo(hf_cache, "org/tiny-sdxl", folder_files(tiny_dir / "sdxl-lightning" / "base"))
    lightning = spec("lightning", WeightSource(repo="org/tiny-sdxl"), arch="sdxl",
                     unet=WeightSource(repo="org/tiny-lightning", filename=LIGHTNING_UNET_FILE))
    eng = engine_for(lightning)
    # The base alone is not enough: the UNet repo is missing.
    assert not eng.is_available("lightning")
    with pytest.raises(ModelUnavailable) as e:
        eng.generate(GenerationParams(model="lightning", prompt="x"))
    assert "sdserve pull lightning" in e.value.message and "org/tiny-lightning" in e.value.message

    cache_repo(hf_cache, "org/tiny-lightning", {LIGHTNING_UNET_FILE: tiny_dir / "sdxl-lightning" / LIGHTNING_UNET_FILE})
    eng = engine_for(lightning)
    assert eng.is_available("lightning")
    assert np.array_equal(txt2img(eng, "lightning"), reference["lightning"])


def test_a_partial_cache_entry_is_not_available(hf_cache, tiny_dir) -> None:  # type: ignore[no-untyped-def]
    # An interrupted download: the snapshot exists but model_index.json never arrived.
    files = {k: v for k, v in folder_files(tiny_dir / "sd15" / "base").items() if k != "model_index.json"}
    cache_repo(hf_cache, "org/partial", files)
    eng = engine_for(spec("partial", WeightSource(repo="org/partial")))
    assert not eng.is_available("partial")
    with pytest.raises(ModelUnavailable, match="sdserve pull partial"):
        eng.generate(GenerationParams(model="partial", prompt="x"))


# -- (b) local diffusers folder ----------------------------------------------------------

def test_local_diffusers_folder(hf_cache, tiny_dir, reference) -> None:  # type: ignore[no-untyped-def]
    eng = engine_for(spec("folder", WeightSource(path=tiny_dir / "sd15" / "base")))
    assert eng.is_available("folder")
    assert np.array_equal(txt2img(eng, "folder"), reference["sd15"])


def test_user_model_from_the_config_file(hf_cache, tiny_dir, tmp_path, reference) -> None:  # type: ignore[no-untyped-def]
    from sdserve.compose import build_engine
    from sdserve.config import load_settings

    toml = tmp_path / "sdserve.toml"
    toml.write_text(f'[[models]]\nid = "mine"\nsource = "{tiny_dir / "sd15" / "base"}"\naliases = ["m"]\n'
                    'width = 64\nheight = 64\nsteps = 2\nscheduler = "euler"\n')
    eng = build_engine(load_settings(toml, device="cpu", dtype="float32", data_dir=tmp_path))
    assert eng.is_available("m")
    assert np.array_equal(txt2img(eng, "m"), reference["sd15"])


def test_a_folder_that_is_not_a_diffusers_folder_is_not_available(hf_cache, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "empty").mkdir()
    eng = engine_for(spec("empty", WeightSource(path=tmp_path / "empty")),
                     spec("gone", WeightSource(path=tmp_path / "gone")))
    for name in ("empty", "gone"):
        assert not eng.is_available(name)
        with pytest.raises(ModelUnavailable) as e:
            eng.generate(GenerationParams(model=name, prompt="x"))
        assert str(tmp_path / name) in e.value.message


# -- (c) single-file checkpoints ---------------------------------------------------------

@pytest.fixture(scope="module")
def sd15_file(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdserve.engine.ldm_export import write_single_file

    return write_single_file(tiny_dir / "sd15" / "base", tmp_path_factory.mktemp("ckpt") / "my-model.safetensors", "sd15")


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_single_file_with_an_explicit_config_folder(hf_cache, tiny_dir, tmp_path, reference, arch: str) -> None:  # type: ignore[no-untyped-def]
    from sdserve.engine.ldm_export import write_single_file

    base = tiny_dir / arch / "base"
    file = write_single_file(base, tmp_path / f"{arch}.safetensors", arch)  # type: ignore[arg-type]
    eng = engine_for(spec("ckpt", WeightSource(path=file, config=WeightSource(path=base)), arch=arch))
    assert eng.is_available("ckpt")
    assert np.array_equal(txt2img(eng, "ckpt"), reference[arch])


def test_single_file_inside_a_diffusers_folder(hf_cache, tiny_dir, sd15_file, tmp_path, reference) -> None:  # type: ignore[no-untyped-def]
    # As the hub repos ship it: the checkpoint next to model_index.json and the configs.
    folder = tmp_path / "sd15-configs"
    shutil.copytree(tiny_dir / "sd15" / "base", folder, ignore=shutil.ignore_patterns("*.safetensors"))
    shutil.copyfile(sd15_file, folder / "my-model.safetensors")
    eng = engine_for(spec("ckpt", WeightSource(path=folder / "my-model.safetensors")))
    assert eng.is_available("ckpt")
    assert np.array_equal(txt2img(eng, "ckpt"), reference["sd15"])


def test_single_file_user_model_with_configs_from_the_cached_base_repo(hf_cache, tiny_dir, sd15_file, tmp_path,
                                                                       reference) -> None:  # type: ignore[no-untyped-def]
    from sdserve.compose import build_engine
    from sdserve.config import load_settings

    toml = tmp_path / "sdserve.toml"
    toml.write_text(f'[[models]]\nid = "my-merge"\nsource = "{sd15_file}"\narch = "sd15"\n'
                    'width = 64\nheight = 64\nsteps = 2\nscheduler = "euler"\n')
    eng = build_engine(load_settings(toml, device="cpu", dtype="float32", data_dir=tmp_path))
    # Nothing to take the configs from yet: a clear error naming the fix.
    assert not eng.is_available("my-merge")
    with pytest.raises(ModelUnavailable) as e:
        eng.generate(GenerationParams(model="my-merge", prompt="x"))
    assert "sdserve pull my-merge" in e.value.message and "config" in e.value.message
    # What `sdserve pull my-merge` fetches: the base repo's config files, no weights.
    cache_repo(hf_cache, SD15_BASE_REPO, folder_files(tiny_dir / "sd15" / "base", weights=False))
    assert eng.is_available("my-merge")
    assert np.array_equal(txt2img(eng, "my-merge"), reference["sd15"])
    # ... which does not make the base model itself look downloaded.
    assert not eng.is_available("@cf/runwayml/stable-diffusion-v1-5-img2img")


def test_missing_single_file_is_unavailable(hf_cache, tmp_path) -> None:  # type: ignore[no-untyped-def]
    eng = engine_for(spec("nofile", WeightSource(path=tmp_path / "nope.safetensors")))
    assert not eng.is_available("nofile")
    with pytest.raises(ModelUnavailable, match="nope.safetensors"):
        eng.generate(GenerationParams(model="nofile", prompt="x"))


def test_corrupt_single_file_is_unavailable_not_a_crash(hf_cache, tiny_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    eng = engine_for(spec("bad", WeightSource(path=bad, config=WeightSource(path=tiny_dir / "sd15" / "base"))))
    with pytest.raises(ModelUnavailable, match="bad"):
        eng.generate(GenerationParams(model="bad", prompt="x"))


# -- (d) missing catalog weights ---------------------------------------------------------

@pytest.mark.parametrize("model", [m.id for m in BUILTIN_MODELS])
def test_builtin_model_without_weights_names_sdserve_pull(hf_cache, model: str) -> None:  # type: ignore[no-untyped-def]
    eng = engine_for(*BUILTIN_MODELS)
    assert not eng.is_available(model)
    inputs = dict(task="inpaint", inputs=input_images(init=png_bytes(), mask=mask_bytes())) if "inpainting" in model else {}
    if "refiner" in model:  # img2img only
        inputs = dict(inputs=input_images(init=png_bytes()))
    with pytest.raises(ModelUnavailable) as e:
        eng.generate(GenerationParams(model=model, prompt="x", **inputs))
    assert f"sdserve pull {model}" in e.value.message
    assert e.value.status == 503


def test_missing_weights_over_http_is_an_envelope_and_the_server_keeps_serving(hf_cache, settings, tiny_dir) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    sdxl = replace(BUILTIN_MODELS[2], aliases=())  # real catalog entry, weights not downloaded
    good = spec("local-sd15", WeightSource(path=tiny_dir / "sd15" / "base"))
    eng = engine_for(sdxl, good)
    with TestClient(make_app(settings, eng), raise_server_exceptions=False) as client:
        r = client.post(f"/ai/run/{sdxl.id}", json={"prompt": "a lighthouse", "width": 256, "height": 256})
        assert r.status_code == 503 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["success"] is False and body["messages"] == [] and body["result"] == {}
        assert body["errors"][0]["code"] == 5007
        assert f"sdserve pull {sdxl.id}" in body["errors"][0]["message"]
        assert "Traceback" not in r.text
        ok = client.post("/ai/run/local-sd15", json={"prompt": "a lighthouse", "width": 256, "height": 256,
                                                     "num_steps": 2, "seed": 1})
        assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
        assert ok.content.startswith(b"\x89PNG")
