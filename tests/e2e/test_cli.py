"""The ``sdserve`` command end to end: make-tiny, generate, models, and serve answering the
README's two Workers AI examples from a separate process.

Demo mode everywhere, with the data dir's demo-models pointing at the session's tiny models
so nothing is rewritten. Commands that only need the CLI's own code run in-process through
``main(argv)``; generate and serve run as real subprocesses of the installed entry point.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from sdserve.engine.auxiliary.specs import AUX_KINDS
from sdserve.cli.main import main
from sdserve.engine.catalog import BUILTIN_MODELS, DEMO_LAYOUTS
from sdserve.engine.tiny import LIGHTNING_UNET_FILE
from sdserve.engine.tiny_addons import TINY_CONTROLNETS, TINY_IP_ADAPTERS

SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"
SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"


def sdserve_cmd() -> list[str]:
    """The installed console script next to this interpreter, else the module."""
    script = Path(sys.executable).with_name("sdserve")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sdserve.cli.main"]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDSERVE_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    return env


@pytest.fixture
def data_dir(tmp_path: Path, tiny_dir: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "demo-models").symlink_to(tiny_dir, target_is_directory=True)
    return data


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_make_tiny_writes_every_layout_reproducibly(tmp_path: Path, tiny_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "tiny"
    assert main(["make-tiny", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[:len(DEMO_LAYOUTS)] == [str(out / layout) for layout in DEMO_LAYOUTS]
    # ... then the add-ons for them, each kind in its A1111 folder (and the auxiliary models
    # under aux/); each writer prints what it wrote, in its own order.
    wrote = set(printed[len(DEMO_LAYOUTS):])
    assert {*(str(out / "ControlNet" / (name + (".safetensors" if single else ""))) for name, (_, single) in
              TINY_CONTROLNETS.items()),
            *(str(out / "ipadapter" / rel) for _, rel in TINY_IP_ADAPTERS.values()),
            *(str(out / "aux" / k) for k in AUX_KINDS)} <= wrote
    assert all((out / "aux" / k / "config.json").is_file() for k in AUX_KINDS)
    for kind in ("Lora", "embeddings", "VAE", "ESRGAN"):
        assert any(p.startswith(str(out / kind)) for p in wrote), f"make-tiny wrote nothing into {kind}/"
    for layout in DEMO_LAYOUTS:
        base = out / layout / "base"
        assert (base / "model_index.json").is_file() and (out / layout / "README.txt").is_file()
        # The SDXL refiner ships no first text encoder (stabilityai's repo: text_encoder_2 only).
        for part in ("unet", "vae", "scheduler") + (() if layout == "sdxl-refiner" else ("text_encoder", "tokenizer")):
            assert (base / part).is_dir(), f"{layout} lacks {part}/"
        if layout.startswith("sdxl"):
            assert (base / "text_encoder_2").is_dir() and (base / "tokenizer_2").is_dir()
    assert (out / "sdxl-lightning" / LIGHTNING_UNET_FILE).is_file()
    # Fixed seeds: the same torch writes the same bytes, so goldens hold for anyone's tiny models.
    assert _digest(out / "sd15") == _digest(tiny_dir / "sd15")


def test_generate_writes_a_png_with_its_parameters(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    proc = subprocess.run(
        [*sdserve_cmd(), "generate", "a lighthouse", "--demo", "--data-dir", str(data_dir), "--width", "64",
         "--height", "64", "--steps", "2", "--seed", "1", "-o", str(out)],
        env=cli_env(), capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{out}  seed=1" in proc.stdout
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (64, 64)
    info = img.text["parameters"]
    assert info.startswith("a lighthouse\n") and "Seed: 1" in info and "Steps: 2" in info
    assert "denoising" in proc.stderr  # the progress bar


def test_generate_batch_img2img_and_errors_in_process(data_dir: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    common = ["--demo", "--data-dir", str(data_dir), "--width", "64", "--height", "64", "--steps", "2"]
    out = tmp_path / "pair.png"
    assert main(["generate", "x", *common, "--seed", "5", "-n", "2", "-o", str(out)]) == 0
    seeds = [Image.open(tmp_path / f"pair-{i}.png").text["parameters"] for i in (0, 1)]
    assert "Seed: 5" in seeds[0] and "Seed: 6" in seeds[1]

    init = tmp_path / "in.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(init)
    painted = tmp_path / "painted.webp"
    assert main(["generate", "an oil painting", *common, "--image", str(init), "--strength", "0.5", "-o", str(painted)]) == 0
    assert Image.open(painted).format == "WEBP"
    capsys.readouterr()

    # Mistakes are one line on stderr and exit status 2, not a traceback.
    assert main(["generate", "x", *common, "--model", "@cf/nope", "-o", str(tmp_path / "n.png")]) == 2
    assert "sdserve: No such model @cf/nope" in capsys.readouterr().err
    assert main(["generate", "x", *common, "--strength", "0.1", "--image", str(init), "-o", str(tmp_path / "s.png")]) == 2
    assert "strength" in capsys.readouterr().err


def test_models_lists_the_demo_catalog(data_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["models", "--demo", "--data-dir", str(data_dir), "--schedulers"]) == 0
    out = capsys.readouterr().out
    for spec in BUILTIN_MODELS:
        assert spec.id in out
    assert out.count("status: demo") == len(BUILTIN_MODELS)
    assert "DPM++ 2M SDE Karras" in out and "euler_trailing" in out and "Euler SGM Uniform" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(data_dir: Path, tmp_path: Path) -> Iterator[str]:
    """``sdserve serve --demo`` in its own process; terminated (and checked) at the end."""
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([*sdserve_cmd(), "serve", "--demo", "--data-dir", str(data_dir), "--port", str(port)],
                            env=cli_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up:\n" + (tmp_path / "server.log").read_text()
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode is not None


@pytest.mark.slow
def test_serve_answers_the_readme_examples(server: str) -> None:
    # The README's two curl commands, verbatim bodies; demo defaults keep them to a few seconds.
    with httpx.Client(base_url=server, timeout=240) as http:
        r = http.post(f"/client/v4/accounts/local/ai/run/{SDXL}",
                      json={"prompt": "a lighthouse on a cliff at dawn", "num_steps": 20, "seed": 42})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        lighthouse = r.content
        img = Image.open(io.BytesIO(lighthouse))
        assert img.format == "PNG" and "Seed: 42" in img.text["parameters"]

        r = http.post(f"/ai/run/{SD15}",
                      json={"prompt": "an oil painting", "strength": 0.6, "seed": 7, "image": list(lighthouse)})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/png"
        painting = Image.open(io.BytesIO(r.content))
        assert painting.format == "PNG" and painting.size == img.size
        assert "Denoising strength: 0.6" in painting.text["parameters"]

        page = http.get("/")
        assert page.status_code == 200 and "DEMO" in page.text
        # The catalog: the five Workers AI models and the SDXL refiner.
        assert http.get(f"/client/v4/accounts/local/ai/models/search").json()["result_info"]["total_count"] == 6
