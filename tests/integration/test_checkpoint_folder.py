"""Checkpoints dropped into models/Stable-diffusion: the family read from the file, servable
without a restart (found by name on first use, listed after refresh-checkpoints with A1111's
title and hashes), and the same pixels as the diffusers model they were exported from."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdserve.engine.checkpoints import detect_family
from sdserve.engine.ldm_export import write_single_file

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"


@pytest.fixture(scope="module")
def exported(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ckpt")
    return {layout: write_single_file(tiny_dir / layout / "base", out / f"{layout}.safetensors",
                                      "sdxl" if layout == "sdxl" else "sd15")
            for layout in ("sd15", "sd15-inpaint", "sdxl")}


def test_family_is_read_from_the_file(exported, tiny_dir):
    assert detect_family(exported["sd15"]) == ("sd15", False)
    assert detect_family(exported["sd15-inpaint"]) == ("sd15", True)
    assert detect_family(exported["sdxl"]) == ("sdxl", False)
    assert detect_family(tiny_dir / "sdxl" / "base") == ("sdxl", False)
    assert detect_family(tiny_dir / "sd15-inpaint" / "base") == ("sd15", True)


def _txt2img(client, checkpoint: str):  # type: ignore[no-untyped-def]
    return client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red kite", "width": 64, "height": 64, "steps": 2, "seed": 5,
        "override_settings": {"sd_model_checkpoint": checkpoint}})


def _px(r) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"), dtype=np.int16)


def test_a_dropped_checkpoint_is_served_without_a_restart(client, engine, exported):
    home = engine.addons.home("checkpoint")
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(exported["sd15"], home / "mini.safetensors")
    # Found by name on first use, no refresh call: the same weights as the built-in tiny SD 1.5.
    r = _txt2img(client, "mini.safetensors")
    assert r.status_code == 200, r.text
    assert np.abs(_px(r) - _px(_txt2img(client, SD15))).max() <= 2
    sha = engine.addons.find("checkpoint", "mini", field="model").sha256()
    assert f"Model hash: {sha[:10]}" in json.loads(r.json()["info"])["infotexts"][0]
    # Another file appears after refresh-checkpoints, with A1111's title, hashes and path.
    shutil.copy(exported["sd15-inpaint"], home / "mini-inpainting.safetensors")
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    items = {m["model_name"]: m for m in client.get("/sdapi/v1/sd-models").json()}
    assert items["mini"]["title"] == f"mini.safetensors [{sha[:10]}]"
    assert (items["mini"]["hash"], items["mini"]["sha256"]) == (sha[:10], sha)
    assert items["mini"]["filename"] == str(home / "mini.safetensors")
    assert "mini-inpainting" in items and SD15 in items
    # The title as A1111 clients send it back selects it; the inpainting UNet only inpaints.
    assert _txt2img(client, items["mini"]["title"]).status_code == 200
    r = _txt2img(client, items["mini-inpainting"]["title"])
    assert r.status_code == 400 and "inpainting" in r.json()["detail"], r.text
    assert engine.catalog.get("mini-inpainting").tasks == ("inpaint",)


def test_files_that_are_no_checkpoint_are_skipped(client, engine):
    home = engine.addons.home("checkpoint")
    home.mkdir(parents=True, exist_ok=True)
    (home / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    assert client.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    assert "garbage" not in {m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()}
    r = _txt2img(client, "garbage.safetensors")
    assert r.status_code == 400 and r.json()["detail"].startswith("override_settings.sd_model_checkpoint")
