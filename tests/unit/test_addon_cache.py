"""AddonCache: add-on networks (ControlNets, upscalers) under the engine's one memory budget,
sharing its LRU without taking a model slot."""

from __future__ import annotations

import threading

from sdserve.engine.memory import AddonCache, ModelCache


def _store(budget: int, max_models: int = 1) -> tuple[ModelCache[object], AddonCache, list[int]]:
    cache: ModelCache[object] = ModelCache(budget, max_models)
    freed: list[int] = []
    return cache, AddonCache(cache, threading.RLock(), lambda: freed.append(1)), freed


def test_loaded_once_and_counted_in_bytes_not_in_slots() -> None:
    cache, store, _ = _store(budget=1000, max_models=1)
    cache.add("model", object(), 500)
    loads: list[str] = []
    net = store.get_or_load("upscaler:x", lambda: loads.append("x") or object(), lambda _: 100)
    assert store.get_or_load("upscaler:x", lambda: loads.append("again") or object(), lambda _: 100) is net
    assert loads == ["x"]
    assert cache.ids() == ["model"]  # the add-on takes no model slot...
    assert cache.sizes() == {"model": 500, "upscaler:x": 100}  # ...but its bytes count
    assert store.bytes("upscaler") == 100 and store.bytes("controlnet") == 0


def test_an_addon_that_does_not_fit_evicts_the_least_recently_used() -> None:
    cache, store, freed = _store(budget=1000, max_models=4)
    cache.add("model", object(), 600)
    store.get_or_load("controlnet:a", object, lambda _: 300)
    store.get_or_load("controlnet:b", object, lambda _: 300)  # 1200 > 1000: the model goes first
    assert list(cache.sizes()) == ["controlnet:a", "controlnet:b"] and freed
    # Asked again after eviction, it is loaded again (room made for its known size first).
    cache.make_room(1000)
    assert cache.sizes() == {}
    loads: list[int] = []
    store.get_or_load("controlnet:a", lambda: loads.append(1) or object(), lambda _: 300)
    assert loads == [1] and store.bytes("controlnet") == 300
