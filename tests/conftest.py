"""Shared fixtures: tiny random-weight models written once per session in the real layouts,
one real engine over them, and a fresh app + job service per test."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

# Tests never reach the hub: loading must work from disk alone.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every tiny family (sd15, sd15-inpaint, sdxl, sdxl-lightning, lcm) and the auxiliary
    models, written once."""
    from sdserve.engine.tiny import write_all_tiny

    from sdserve.engine.auxiliary.tiny import write_tiny_aux

    root = tmp_path_factory.mktemp("tiny")
    write_all_tiny(root)
    write_tiny_aux(root / "aux")  # the demo's safety checker, enhancer, captioner: not on first use
    # Their ControlNets and IP-Adapters now, not in the background of the first test's requests.
    from sdserve.engine.tiny_addons import ensure_demo_controlnets

    ensure_demo_controlnets(root)
    return root


@pytest.fixture(scope="session")
def demo_data_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose demo models are the session's tiny models (no rewrite per test)."""
    data = tmp_path_factory.mktemp("data")
    (data / "demo-models").symlink_to(tiny_dir, target_is_directory=True)
    return data


@pytest.fixture(scope="session")
def settings(demo_data_dir: Path):  # type: ignore[no-untyped-def]
    from sdserve.config import Settings

    # float32 pinned: goldens must not depend on whether this CPU has native bf16.
    return Settings(demo=True, data_dir=demo_data_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def engine(settings):  # type: ignore[no-untyped-def]
    """One real diffusers engine over the tiny models, shared by the session."""
    from sdserve.compose import build_engine

    return build_engine(settings)


def make_app(settings, engine, **overrides):  # type: ignore[no-untyped-def]
    from sdserve.api.app import build_app
    from sdserve.compose import service_options
    from sdserve.service.service import JobService

    s = settings.model_copy(update=overrides) if overrides else settings
    # In memory (no data dir); options (pixel cap, the outputs' sampler labels, ...) as the
    # composition root sets them from the settings.
    return build_app(s, JobService(engine, max_queue=s.max_queue, options=service_options(s)))


@pytest.fixture
def client(settings, engine) -> Iterator:  # type: ignore[no-untyped-def]
    """A TestClient over a fresh app and job service (lifespan started)."""
    from fastapi.testclient import TestClient

    with TestClient(make_app(settings, engine)) as c:
        yield c


@pytest.fixture(scope="module")
def catalog():  # type: ignore[no-untyped-def]
    """The built-in catalog: what the dialect adapters' unit tests resolve models in."""
    from sdserve.engine.catalog import Catalog

    return Catalog.builtin()


def make_params(**fields):  # type: ignore[no-untyped-def]
    """GenerationParams from keyword fields, with ``init_image``/``mask_image`` bytes taken
    as its ``inputs`` by role (the shape tests describe requests in)."""
    from sdserve.engine.params import GenerationParams, input_images

    init, mask = fields.pop("init_image", None), fields.pop("mask_image", None)
    return GenerationParams(**fields, inputs=input_images(init=init, mask=mask))


def png_of(img: Image.Image) -> bytes:
    """``img`` encoded as PNG."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def png_bytes(size: tuple[int, int] = (64, 64), color: tuple[int, ...] = (200, 40, 40), mode: str = "RGB") -> bytes:
    return png_of(Image.new(mode, size, color))


def mask_bytes(size: tuple[int, int] = (64, 64), box: tuple[int, int, int, int] = (16, 16, 48, 48)) -> bytes:
    """White square (repaint) on black (keep)."""
    m = Image.new("L", size, 0)
    m.paste(255, box)
    return png_of(m)
