"""Loaded models under a memory budget: the least recently used ones make room.

The budget is device memory on a GPU and RAM on the CPU. A model's size is measured once
it is loaded (every parameter and buffer of its components, each shared tensor counted
once), so loading a model that does not fit evicts idle models, oldest use first, instead
of failing. The engine loads and runs under one lock, so a model being run is never the one
evicted.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import torch

__all__ = ["ModelCache", "AddonCache", "standalone_store", "default_budget_bytes", "pipeline_bytes", "module_bytes"]

log = logging.getLogger(__name__)

# Shares of the device left to weights by default: the rest holds activations (a UNet pass
# at batch 8 and 1024² takes several GB), the VAE decode and, on the CPU, everything else.
_GPU_SHARE = 0.75
_CPU_SHARE = 0.5


def default_budget_bytes(device: torch.device) -> int:
    """What the weights may take on ``device`` when no budget is configured."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * _GPU_SHARE)
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * _CPU_SHARE)


def pipeline_bytes(pipe: Any) -> int:
    """Bytes held by a pipeline's modules (text encoders, UNet, VAE), shared storage once."""
    return module_bytes(*(c for c in pipe.components.values() if isinstance(c, torch.nn.Module)))


def module_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the modules' parameters and buffers, each shared storage counted once."""
    seen: set[int] = set()
    total = 0
    for component in modules:
        for t in [*component.parameters(), *component.buffers()]:
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen:
                continue
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


M = TypeVar("M")


class ModelCache(Generic[M]):
    """Loaded models (of type ``M``) by id in least-recently-used order, with their sizes.

    Its own small lock keeps readers (health, metrics) from waiting on a running loop.
    """

    def __init__(self, budget_bytes: int, max_models: int) -> None:
        self.budget_bytes = budget_bytes
        self.max_models = max(1, max_models)
        self._models: OrderedDict[str, M] = OrderedDict()
        self._sizes: dict[str, int] = {}
        # Entries that count against the byte budget only (add-ons such as VAEs), not the count.
        self._uncounted: set[str] = set()
        self._lock = threading.Lock()

    def get(self, model_id: str) -> M | None:
        """The loaded model, marked as just used; None if it is not loaded."""
        with self._lock:
            model = self._models.get(model_id)
            if model is not None:
                self._models.move_to_end(model_id)
            return model

    def make_room(self, need_bytes: int, counted: bool = True) -> list[str]:
        """Evict least recently used models until one more of ``need_bytes`` fits both the
        byte budget and (``counted``: a model, not an add-on) the model count. Returns the
        evicted ids. A model bigger than the whole budget still gets the device to itself: it
        may fit, and failing is worse."""
        evicted = []
        with self._lock:
            while self._models and (counted and len(self._models) - len(self._uncounted) >= self.max_models
                                    or self._used() + need_bytes > self.budget_bytes):
                model_id, _ = self._models.popitem(last=False)
                self._uncounted.discard(model_id)
                evicted.append(model_id)
                log.info("unloaded %s (%.2f GB) to make room for %.2f GB within a %.2f GB budget", model_id,
                         self._sizes.get(model_id, 0) / 1e9, need_bytes / 1e9, self.budget_bytes / 1e9)
        return evicted

    def add(self, model_id: str, model: M, size_bytes: int, counted: bool = True) -> None:
        """Keep ``model``; ``counted=False``: it takes bytes of the budget but no model slot."""
        with self._lock:
            self._models[model_id] = model
            self._models.move_to_end(model_id)
            self._sizes[model_id] = size_bytes
            if not counted:
                self._uncounted.add(model_id)

    def discard(self, model_id: str, model: M) -> bool:
        """Remove ``model_id`` if ``model`` is what is loaded under it; whether it was."""
        with self._lock:
            if self._models.get(model_id) is not model:
                return False
            del self._models[model_id]
            self._uncounted.discard(model_id)
            return True

    def known_size(self, model_id: str) -> int:
        """The size measured the last time ``model_id`` was loaded (0 if never)."""
        with self._lock:
            return self._sizes.get(model_id, 0)

    def ids(self) -> list[str]:
        """Loaded ids (models, not add-ons), least recently used first."""
        with self._lock:
            return [m for m in self._models if m not in self._uncounted]

    def sizes(self) -> dict[str, int]:
        """Bytes per loaded model, least recently used first."""
        with self._lock:
            return {m: self._sizes[m] for m in self._models}

    def _used(self) -> int:
        return sum(self._sizes[m] for m in self._models)


class AddonCache:
    """Add-on networks (ControlNets, upscalers) kept in the engine's ModelCache: their bytes
    count against the one memory budget and they share its LRU, but take no model slot. One
    evicted to make room is loaded from its file again when next asked for.

    Keys are ``"<kind>:<what identifies the file and how it was loaded>"``."""

    def __init__(self, cache: ModelCache[Any], lock: threading.RLock, free_memory: Callable[[], None]) -> None:
        self._cache, self._lock, self._free = cache, lock, free_memory

    def get_or_load(self, key: str, load: Callable[[], M], size: Callable[[M], int]) -> M:
        """The network kept under ``key``, or ``load()`` it (room made first for what it took
        last time, then for its measured size) and keep it."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                return hit  # type: ignore[no-any-return]
            if self._cache.make_room(self._cache.known_size(key), counted=False):
                self._free()
            model = load()
            n = size(model)
            if self._cache.make_room(n, counted=False):
                self._free()
            self._cache.add(key, model, n, counted=False)
            return model

    def bytes(self, kind: str) -> int:
        """Bytes the loaded add-ons of ``kind`` hold."""
        return sum(n for k, n in self._cache.sizes().items() if k.startswith(f"{kind}:"))


def standalone_store(budget_bytes: int = 2**30) -> AddonCache:
    """An add-on cache of its own (``budget_bytes``, LRU) for callers without an engine (the
    bench's upscaler figure, direct library use): the same keep-and-evict as an engine's."""
    return AddonCache(ModelCache(budget_bytes, 1), threading.RLock(), lambda: None)
