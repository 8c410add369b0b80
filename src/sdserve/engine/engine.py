"""Engine: the small interface the service drives. Loads models on demand (one copy of the
weights per model, shared by its tasks), runs one request's denoising loop with progress
and cancel hooks, and reports health. It never imports the service or HTTP layers."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import BadInput, GenerationFailed, SdserveError
from ..images import decode_image
from .catalog import Catalog, ModelSpec
from .loading import is_available, load_base_pipeline, pull
from .params import GenerationParams, GenerationResult, StepInfo
from .pipelines import LoadedModel
from .schedulers import get_scheduler

__all__ = ["Engine", "EngineOptions", "pick_device", "pick_dtype"]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """'auto' is CUDA when present, else CPU; anything else is taken as a torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but this torch build sees no CUDA GPU; use 'cpu' or install a CUDA torch")
    return dev


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on GPUs that support it (fp16 otherwise) and float32 on CPU."""
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _quiet_libraries() -> None:
    # diffusers/transformers log per-load notices and progress bars meant for notebooks; a
    # server reports loading in its own log lines instead.
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs; the CLI fills this from Settings."""

    device: str = "auto"
    dtype: str = "auto"
    max_loaded_models: int = 2
    max_image_pixels: int = 4096 * 4096
    # When set, catalog entries whose weights are missing are written here as tiny models.
    demo_dir: Path | None = None
    threads: int | None = None


class Engine:
    """Runs GenerationParams on diffusers pipelines. Thread-safe; one loop at a time."""

    def __init__(self, catalog: Catalog, options: EngineOptions | None = None) -> None:
        self.catalog = catalog
        self.options = options or EngineOptions()
        self.device = pick_device(self.options.device)
        self.dtype = pick_dtype(self.options.dtype, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(self.options.threads or os.cpu_count() or 1)
        _quiet_libraries()
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()

    # -- models ---------------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec:
        return self.catalog.get(name)

    def load(self, name: str) -> LoadedModel:
        """The loaded model for an id or alias, loading (and evicting the LRU) if needed."""
        spec = self.catalog.get(name)
        with self._lock:
            if spec.id in self._loaded:
                self._loaded.move_to_end(spec.id)
                return self._loaded[spec.id]
            self._ensure_demo(spec)
            while len(self._loaded) >= max(1, self.options.max_loaded_models):
                evicted, _ = self._loaded.popitem(last=False)
                log.info("unloaded %s to make room", evicted)
            t0 = time.perf_counter()
            pipe = load_base_pipeline(spec, self.dtype)
            pipe.to(self.device)
            pipe.set_progress_bar_config(disable=True)
            model = LoadedModel(spec=spec, base=pipe, device=self.device, dtype=self.dtype)
            self._loaded[spec.id] = model
            log.info("loaded %s from %s in %.1fs on %s/%s", spec.id, spec.source.describe(),
                     time.perf_counter() - t0, self.device, str(self.dtype).removeprefix("torch."))
            return model

    def _ensure_demo(self, spec: ModelSpec) -> None:
        demo = self.options.demo_dir
        if demo is None or spec.source.path is None or not spec.source.path.is_relative_to(demo):
            return
        if not (demo / spec.demo_layout / "README.txt").exists():
            from .tiny import write_tiny

            log.warning("DEMO MODE: writing tiny random-weight '%s' model to %s; its images are noise",
                        spec.demo_layout, demo)
            write_tiny(demo, spec.demo_layout)

    def loaded_models(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def is_available(self, name: str) -> bool:
        spec = self.catalog.get(name)
        if self.options.demo_dir is not None and spec.source.path is not None \
                and spec.source.path.is_relative_to(self.options.demo_dir):
            return True  # written on first use
        return is_available(spec)

    def pull(self, name: str) -> list[str]:
        return pull(self.catalog.get(name))

    def health(self) -> dict[str, Any]:
        info: dict[str, Any] = {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                                "loaded_models": self.loaded_models(), "threads": torch.get_num_threads()}
        if self.device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self.device)
            info["memory_allocated_bytes"] = torch.cuda.memory_allocated(self.device)
        return info

    # -- generation -----------------------------------------------------------------------

    def prepare(self, params: GenerationParams) -> GenerationParams:
        """Resolve defaults and check what any dialect must satisfy; raises BadInput."""
        spec = self.catalog.get(params.model)
        spec.check_task(params.task)
        p = params.resolve(spec)  # idempotent: fills only what is still None
        for name in ("width", "height"):
            v = getattr(p, name)
            if v % 8 or not 64 <= v <= 4096:
                raise BadInput(name, f"{v} is not allowed: use a multiple of 8 between 64 and 4096")
        if not (p.steps and 1 <= p.steps <= 200):
            raise BadInput("steps", f"{p.steps} is not allowed: use 1 to 200")
        if p.guidance is None or not math.isfinite(p.guidance) or not 0 <= p.guidance <= 50:
            raise BadInput("guidance", f"{p.guidance} is not allowed: use a number from 0 to 50")
        if p.strength is None or not math.isfinite(p.strength) or not 0 < p.strength <= 1:
            raise BadInput("strength", f"{p.strength} is not allowed: use a number above 0 and at most 1")
        get_scheduler(p.scheduler or "")
        if p.task != "txt2img" and p.init_image is None:
            raise BadInput("image", f"task {p.task} needs an input image")
        if p.task == "inpaint" and p.mask_image is None:
            raise BadInput("mask", "inpainting needs a mask (white = repaint, black = keep)")
        return p

    def _decode_inputs(self, p: GenerationParams) -> tuple[Image.Image | None, Image.Image | None]:
        px = self.options.max_image_pixels
        image = decode_image(p.init_image, "image", px) if p.init_image is not None else None
        mask = decode_image(p.mask_image, "mask", px, mode="L") if p.mask_image is not None else None
        if image is not None and mask is not None and image.size != mask.size:
            raise BadInput("mask", f"is {mask.width}x{mask.height} but the image is {image.width}x{image.height}; "
                                   "they must be the same size")
        size = (p.width, p.height)
        if image is not None and image.size != size:
            image = image.resize(size, Image.Resampling.LANCZOS)
        if mask is not None and mask.size != size:
            mask = mask.resize(size, Image.Resampling.NEAREST)
        return image, mask

    def generate(
        self,
        params: GenerationParams,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Generate ``params.n`` images. Raises BadInput, ModelUnavailable, Canceled or GenerationFailed."""
        p = self.prepare(params)
        image, mask = self._decode_inputs(p)
        model = self.load(p.model)
        t0 = time.perf_counter()
        try:
            with self._lock:
                images = model.run(p, image, mask, on_step, cancel)
        except SdserveError:
            raise
        except torch.OutOfMemoryError as e:
            raise GenerationFailed(f"out of memory generating {p.n} image(s) at {p.width}x{p.height}") from e
        except Exception as e:  # the engine failed on valid input: the server's fault
            log.exception("generation failed for %s", p.model)
            raise GenerationFailed(f"generation failed: {type(e).__name__}: {e}") from e
        return GenerationResult(
            params=p,
            images=images,
            seeds=p.seeds,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            timings={"denoise_s": time.perf_counter() - t0},
        )
