"""Model memory: loaded models live under a byte budget and a count, least recently used
unload first, one copy of the weights per model, and sizes show in /readyz and /metrics."""

from __future__ import annotations

from sdserve.engine.pipelines import Needs

import torch

from sdserve.compose import build_engine
from sdserve.engine.memory import ModelCache, pipeline_bytes
from tests.conftest import make_app

SD15 = "@cf/runwayml/stable-diffusion-v1-5-img2img"
LCM = "@cf/lykon/dreamshaper-8-lcm"
SDXL = "@cf/stabilityai/stable-diffusion-xl-base-1.0"


def _engine(settings, **over):  # type: ignore[no-untyped-def]
    return build_engine(settings.model_copy(update=over))


def test_pipeline_bytes_counts_every_tensor_once(engine):  # type: ignore[no-untyped-def]
    pipe = engine.load(SD15).base
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    expected = sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])
    assert pipeline_bytes(pipe) <= expected  # tied/shared tensors once
    assert pipeline_bytes(pipe) > 0.95 * expected
    # The inpaint view shares the base's modules: same bytes, not twice as many.
    view = engine.load(SD15).pipeline(Needs("inpaint"))
    assert pipeline_bytes(view) == pipeline_bytes(pipe)


def test_a_model_that_does_not_fit_evicts_the_least_recently_used(settings, engine):  # type: ignore[no-untyped-def]
    sizes = {m: pipeline_bytes(engine.load(m).base) for m in (SD15, LCM, SDXL)}
    # Room for the two SD1.5-family models, not for a third model beside them.
    budget = sizes[SD15] + sizes[LCM] + min(sizes.values()) // 2
    eng = _engine(settings, model_memory_gb=budget / 2**30, max_loaded_models=10)
    eng.load(SD15)
    eng.load(LCM)
    assert eng.loaded_models() == [SD15, LCM]
    eng.load(SD15)  # now LCM is the least recently used
    eng.load(SDXL)
    # LCM (least recently used) goes first; SD1.5 stays if SDXL fits beside it.
    expected = [SD15, SDXL] if sizes[SD15] + sizes[SDXL] <= budget else [SDXL]
    assert eng.loaded_models() == expected
    h = eng.health()
    assert h["memory_budget_bytes"] == int(budget / 2**30 * 2**30)
    assert sum(h["model_bytes"].values()) <= h["memory_budget_bytes"]
    # The evicted model loads again on demand and still generates.
    from sdserve.engine.params import GenerationParams

    res = eng.generate(GenerationParams(model=LCM, prompt="x", width=64, height=64, steps=1, seed=1))
    assert LCM in eng.loaded_models() and len(res.images) == 1


def test_count_cap_applies_within_the_budget(settings):  # type: ignore[no-untyped-def]
    eng = _engine(settings, max_loaded_models=1)
    eng.load(SD15)
    eng.load(LCM)
    assert eng.loaded_models() == [LCM]


def test_a_model_bigger_than_the_budget_still_loads_alone():
    cache = ModelCache(budget_bytes=100, max_models=3)
    cache.add("a", object(), 60)
    cache.add("b", object(), 30)
    assert cache.make_room(40) == ["a"]  # 30 + 40 fits once a goes
    assert cache.make_room(500) == ["b"]  # bigger than the budget: the device is all its own
    assert cache.ids() == []


def test_loaded_models_and_their_bytes_are_in_readyz_and_metrics(settings, engine):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    engine.load(SD15)
    with TestClient(make_app(settings, engine)) as c:
        ready = c.get("/readyz").json()
        assert SD15 in ready["loaded_models"] and ready["model_bytes"][SD15] > 0
        assert ready["memory_budget_bytes"] > 0
        for key in ("channels_last", "compile", "vae_tiling", "attention", "device", "dtype", "threads"):
            assert key in ready
        text = c.get("/metrics").text
    assert f'sdserve_model_memory_bytes{{model="{SD15}"}}' in text
    assert "sdserve_model_memory_budget_bytes" in text
