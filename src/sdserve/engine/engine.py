"""Engine: the small interface the service drives. Loads models on demand (one copy of the
weights per model, shared by its tasks), runs one request's denoising loop with progress
and cancel hooks, and reports health. It never imports the service or HTTP layers."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import BadInput, Canceled, GenerationFailed, ModelUnavailable, SdserveError
from .addon_files import AddonFolders, file_sha256
from .auxiliary.runner import Auxiliary
from .auxiliary.specs import AuxKind, AuxSpec
from .batching import run_batch
from .upscalers import upscale
from .catalog import Catalog, ModelSpec, WeightSource
from .controlnets import ControlNets
from .ip_adapters import IPAdapters
from .tiny_addons import ensure_demo_controlnets
from .embeddings import ensure_embeddings
from .checkpoints import CheckpointFolder
from .fastpaths import CompileMode, Switch, resolve_fast_paths
from .lora_adapters import ensure_loaded as ensure_loras
from .loading import is_available, load_base_pipeline, load_vae, pull
from .memory import AddonCache, ModelCache, default_budget_bytes, module_bytes, pipeline_bytes
from .params import BatchItem, GenerationParams, GenerationResult, StepInfo, batch_key
from .pipelines import LoadedModel, prompt_warnings
from .outpaint import keep_original
from .postprocess import apply_upscale
from .preprocessors import control_image
from .prepare import prepare, prepare_with_images
from .sd_upscale_run import Tiled, tile_items, upscale_settings
from .seamless import circular_padding
from .tiny_upscalers import write_demo_upscalers
from .faces import check_face_restoration, restore_faces
from .faces.tiny import write_demo_faces
from .upscalers.checks import check_upscaler_names
from .tiny_vae import write_tiny_vaes
from .vae import load_addon_vae, vae_cache_key

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


def resolve_dtype(name: str) -> torch.dtype:
    """The torch dtype for a settings name ('float32', 'bfloat16', 'float16')."""
    return _DTYPES[name]


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run ~3x faster than fp32 there (emulated elsewhere)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto': bf16 on GPUs that support it (else fp16); on CPUs bf16 only where it is native."""
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


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
    # Loaded models are capped by count and by bytes of weights (None: engine.memory's
    # default share of the device); the least recently used make room.
    max_loaded_models: int = 4
    memory_budget_bytes: int | None = None
    # Upper bound on images in one denoising loop; memory may allow fewer.
    max_batch_images: int = 8
    max_image_pixels: int = 4096 * 4096
    # When set, catalog entries whose weights are missing are written here as tiny models.
    demo_dir: Path | None = None
    threads: int | None = None
    # Speed choices (engine.fastpaths): 'auto' is settled per device.
    channels_last: Switch = "auto"
    compile: CompileMode = "off"
    compile_backend: str = "inductor"
    vae_tiling: Switch = "auto"
    # A fp16-safe VAE for SDXL-family models, used when running in float16.
    sdxl_vae: WeightSource | None = None
    # Add-on files (LoRA, embeddings, VAEs, ...) in A1111's layout; kind -> folders overrides.
    models_dir: Path = Path("data/models")
    model_dirs: dict[str, list[Path]] | None = None
    # Auxiliary models (safety checker, prompt enhancer, captioner) by kind; a kind left
    # out is off. In demo mode they point under demo_dir and are written on first use.
    aux: dict[AuxKind, WeightSource] | None = None


class Engine:
    """Runs GenerationParams on diffusers pipelines. Thread-safe; one loop at a time."""

    def __init__(self, catalog: Catalog, options: EngineOptions | None = None) -> None:
        self.catalog = catalog
        self.options = options or EngineOptions()
        self.addons = AddonFolders(self.options.models_dir, self.options.model_dirs or {})
        if self.options.demo_dir is not None:  # every feature tryable without a download
            write_demo_upscalers(self.addons)
            write_demo_faces(self.addons)
        # Checkpoints in the Stable-diffusion folder join the catalog: found now, on a miss,
        # and on refresh_checkpoints.
        self.checkpoints = CheckpointFolder(self.addons, self.options.demo_dir)
        catalog.finder = self.checkpoints.find
        catalog.set_found(self.checkpoints.specs())
        self.device = pick_device(self.options.device)
        self.dtype = pick_dtype(self.options.dtype, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(self.options.threads or os.cpu_count() or 1)
        _quiet_libraries()
        o = self.options
        self.fast = resolve_fast_paths(self.device, o.channels_last, o.compile, o.vae_tiling, o.compile_backend)
        # Diffusion and auxiliary models share one budget and LRU.
        self._models = ModelCache[Any](o.memory_budget_bytes or default_budget_bytes(self.device),
                                       o.max_loaded_models)
        self._lock = threading.RLock()
        self.aux = Auxiliary({k: AuxSpec(k, src) for k, src in (o.aux or {}).items()}, self._models, self._lock,
                             self.device, self.dtype, self._free_memory, o.demo_dir)
        # ControlNets and upscalers: under the same budget and LRU, in no model slot.
        self.addon_store = AddonCache(self._models, self._lock, self._free_memory)
        self.controlnets = ControlNets(self.addons, self.device, self.dtype, self.addon_store)
        self.ip_adapters = IPAdapters(self.addons, self.device, self.dtype)
        # Demo mode: tiny ControlNets and IP-Adapters to try them on, written in the background
        # (a minute on a busy small CPU); a request that uses one waits for them. One writer at
        # a time: writing tiny weights seeds torch's global generator, as writing a demo model
        # does (_ensure_demo), and the weights must not depend on which ran first.
        self._demo_writing = threading.Lock()
        self._demo_control_writer = threading.Thread(target=self._write_demo_addons, name="demo-addons",
                                             daemon=True) if self.options.demo_dir else None
        self._demo_addons()  # LoRAs and embeddings (engine.tiny_lora)
        if o.demo_dir is not None:  # demo mode: a tiny VAE to try sd_vae / vae with
            write_tiny_vaes(self.addons.home("vae"), o.demo_dir)
        if self._demo_control_writer is not None:
            self._demo_control_writer.start()

    # -- models ---------------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec:
        return self.catalog.get(name)

    def load(self, name: str) -> LoadedModel:
        """The loaded model for an id or alias, loading (and evicting the LRU) if needed."""
        spec = self.catalog.get(name)
        with self._lock:
            model = self._models.get(spec.id)
            if isinstance(model, LoadedModel):
                return model
            self._ensure_demo(spec)
            # Room for what this model took last time (the count cap on a first load) before
            # reading weights, then for its measured size before moving it to the device.
            if self._models.make_room(self._models.known_size(spec.id)):
                self._free_memory()
            t0 = time.perf_counter()
            pipe = load_base_pipeline(spec, self.dtype)
            if spec.arch == "sdxl" and self.dtype == torch.float16 and self.options.sdxl_vae is not None:
                pipe.vae = load_vae(self.options.sdxl_vae, self.dtype)
            size = pipeline_bytes(pipe)
            if self._models.make_room(size):
                self._free_memory()
            try:
                pipe.to(self.device)
            except torch.OutOfMemoryError:
                del pipe
                self._free_memory()
                raise ModelUnavailable(f"{spec.id} needs {size / 1e9:.1f} GB and does not fit in {self.device} "
                                       "memory beside what is running") from None
            self.fast.apply(pipe)
            # The VAE decodes (and encodes) one image at a time: its bf16 CPU kernels give
            # batch-size-dependent results (up to 6/255 measured), so batching would change
            # images; per image it matches the image made alone, and peak memory drops.
            pipe.vae.enable_slicing()
            pipe.set_progress_bar_config(disable=True)
            model = LoadedModel(spec=spec, base=pipe, device=self.device, dtype=self.dtype, controlnets=self.controlnets,
                                ip_adapters=self.ip_adapters, vaes=functools.partial(self._addon_vae, spec, pipe.vae))
            if self.fast.compile != "off" and not spec.refiner:  # a refiner compiles on its first pass
                try:
                    self._warm_up(model)
                except Exception:  # noqa: BLE001 - e.g. no C++ compiler for Inductor: serve it uncompiled
                    log.exception("torch.compile failed for %s; serving it uncompiled", spec.id)
                    pipe.unet = getattr(pipe.unet, "_orig_mod", pipe.unet)
            self._models.add(spec.id, model, size)
            log.info("loaded %s (%.2f GB) from %s in %.1fs on %s/%s", spec.id, size / 1e9, spec.source.describe(),
                     time.perf_counter() - t0, self.device, str(self.dtype).removeprefix("torch."))
            return model

    def _addon_vae(self, spec: ModelSpec, own_vae: Any, name: str) -> Any:
        """The add-on VAE ``name`` built for ``spec`` on the device: loaded once, then kept in
        the model cache (its bytes count against the budget, it takes no model slot)."""
        file = self.addons.find("vae", name, field="vae")
        key = vae_cache_key(file, spec.id)
        with self._lock:
            vae = self._models.get(key)
            if vae is None:
                vae = load_addon_vae(file, own_vae, self.dtype)
                size = module_bytes(vae)
                if self._models.make_room(size, counted=False):
                    self._free_memory()
                vae.to(self.device)
                vae.enable_slicing()  # as the model's own: per image, so batching changes no image
                self._models.add(key, vae, size, counted=False)
                log.info("loaded VAE %s for %s (%.0f MB)", file.name, spec.id, size / 1e6)
            return vae

    def _warm_up(self, model: LoadedModel) -> None:
        """Compile the model's default shape now, so its first request does not wait for it."""
        t0 = time.perf_counter()
        p = self.prepare(GenerationParams(model=model.spec.id, prompt="warm-up", steps=2, seed=0))
        run_batch(model, [BatchItem(p)])
        log.info("compiled %s at %dx%d in %.1fs", model.spec.id, p.width, p.height, time.perf_counter() - t0)

    def _ensure_demo(self, spec: ModelSpec) -> None:
        demo = self.options.demo_dir
        if demo is None or spec.source.path is None or not spec.source.path.is_relative_to(demo):
            return
        readme = demo / spec.demo_layout / "README.txt"
        # A folder without an architecture line was written by an older sdserve with the slow
        # test architecture: replace it. One with any architecture line is kept (the test
        # suite points demo mode at its own tiny models, whose goldens are pinned).
        if not readme.exists() or "architecture" not in readme.read_text():
            from .tiny import write_tiny

            log.warning("DEMO MODE: writing tiny random-weight '%s' model to %s; its images are noise",
                        spec.demo_layout, demo)
            with self._demo_writing:
                write_tiny(demo, spec.demo_layout, demo=True)

    def _demo_addons(self) -> None:
        """Demo mode: tiny LoRAs and embeddings for the tiny SD 1.5 and SDXL models, so
        ``<lora:tiny_detail:0.8>`` works from the first request (engine.tiny_lora)."""
        demo = self.options.demo_dir
        if demo is None:
            return
        from .tiny_lora import TINY_LORAS, write_tiny_addons

        for layout in sorted(set(TINY_LORAS.values())):
            spec = next((s for s in self.catalog if s.demo_layout == layout), None)
            if spec is not None:
                self._ensure_demo(spec)
        write_tiny_addons(demo, self.addons.home("lora"), self.addons.home("embedding"))

    def unload(self, model: LoadedModel) -> bool:
        """Drop ``model`` if it is still the loaded copy of its id (a later reload is kept);
        a Ray model replica calls this when its multiplexer evicts the model."""
        with self._lock:
            if not self._models.discard(model.spec.id, model):
                return False
            self._free_memory()
        log.info("unloaded %s", model.spec.id)
        return True

    def refresh_checkpoints(self) -> None:
        """Rescan the checkpoint folder (A1111's refresh-checkpoints): new files become servable."""
        self.catalog.set_found(self.checkpoints.specs())

    def loaded_models(self) -> list[str]:
        return self._models.ids()

    def is_available(self, name: str) -> bool:
        spec = self.catalog.get(name)
        if self.options.demo_dir is not None and spec.source.path is not None \
                and spec.source.path.is_relative_to(self.options.demo_dir):
            return True  # written on first use
        return is_available(spec)

    def pull(self, name: str) -> list[str]:
        return pull(self.catalog.get(name))

    def health(self) -> dict[str, Any]:
        sizes = self._models.sizes()
        info: dict[str, Any] = {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                                "loaded_models": list(sizes), "model_bytes": sizes,
                                "memory_budget_bytes": self._models.budget_bytes, "auxiliary": self.aux.health(),
                                "threads": torch.get_num_threads(), **self.fast.report(),
                                "controlnet_bytes": self.controlnets.bytes()}
        if self.device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self.device)
            info["memory_allocated_bytes"] = torch.cuda.memory_allocated(self.device)
            info["device_memory"] = _cuda_memory(self.device)
        return info

    # -- generation -----------------------------------------------------------------------

    def _write_demo_addons(self) -> None:
        assert self.options.demo_dir is not None
        with self._demo_writing:
            try:
                ensure_demo_controlnets(self.options.demo_dir)
            except Exception:  # noqa: BLE001 - demo extras: the server serves without them
                log.exception("could not write the demo ControlNets and IP-Adapters")
        self.addons.refresh("controlnet")
        self.addons.refresh("ip_adapter")

    def _await_addons(self, params: GenerationParams) -> None:
        if self._demo_control_writer is not None and (params.control or params.ip_adapter is not None):
            self._demo_control_writer.join()

    def prepare(self, params: GenerationParams, max_pixels: int | None = None) -> GenerationParams:
        """Resolve defaults and check what any dialect must satisfy; raises BadInput."""
        self._await_addons(params)
        p = prepare(self.catalog, params, max_pixels or self.options.max_image_pixels, self.addons)
        check_upscaler_names(p, self.addons)  # the files are this engine's
        p = check_face_restoration(p, self.addons)
        self.aux.require(p)
        return p

    def _resize(self, name: str, image: Image.Image, width: int, height: int) -> Image.Image:
        """An image upscaler (engine.upscalers) applied for a hires pass."""
        return upscale([image], name, size=(width, height), device=self.device, dtype=self.dtype, addons=self.addons,
                       field="hires.upscaler", max_pixels=self.options.max_image_pixels, store=self.addon_store)[0]

    def aux_available(self, kind: AuxKind) -> bool:
        """Whether this server has the auxiliary model ``kind`` (its weights are here)."""
        return self.aux.available(kind)

    def caption(self, image: bytes, field: str = "image") -> str:
        """A caption of an encoded image; BadInput naming ``field`` if it does not decode."""
        return self.aux.caption(image, field, self.options.max_image_pixels)

    def annotate(self, name: str, image: Image.Image) -> Image.Image:
        """``image`` through the annotator preprocessor ``name`` (depth, pose) on this engine's
        device; BadInput naming `sdserve pull` when its models are missing."""
        return self.aux.annotate(name, image)

    def annotators(self) -> list[str]:
        """The annotator preprocessors (depth, pose) whose models this server has."""
        return self.aux.annotators()

    def _prepare_item(self, req: BatchItem) -> BatchItem:
        """``req`` resolved, with its input images decoded and sized to the output."""
        self._await_addons(req.params)
        p, images = prepare_with_images(self.catalog, req.params, self.options.max_image_pixels, self.addons)
        assert p.width is not None and p.height is not None, "prepare() resolves the size"
        if p.task == "upscale":  # the input is what gets upscaled: kept at its own size
            return BatchItem(p, images, req.on_step, req.cancel)
        if p.sd_upscale is not None:  # upscaled and cut into tiles of the size (generate_batch)
            return BatchItem(p, images, req.on_step, req.cancel, req.interrupt)
        size = (p.width, p.height)
        for i, u in enumerate(p.control):  # each unit's image preprocessed and fitted its own way
            key = "control" if i == 0 else f"control.{i}"
            images[key] = control_image(u.preprocessor, images[key], size, u.resize_mode, u.processor_res,
                                        u.threshold_a, u.threshold_b, images.get("mask"), self.aux.annotate)
        # Masks keep hard edges (NEAREST); images are resampled smoothly.
        # (The IP-Adapter's image prompt keeps its own size: its encoder's processor fits it.)
        sized = {role: img if img.size == size or role == "ip_adapter" else
                 img.resize(size, Image.Resampling.NEAREST if role == "mask" else Image.Resampling.LANCZOS)
                 for role, img in images.items()}
        return BatchItem(p, sized, req.on_step, req.cancel, req.interrupt)

    def max_batch_images(self, width: int, height: int) -> int:
        """How many images of this size fit one loop, from free device memory (at least 1)."""
        # Activations of a UNet pass scale with pixels; ~1.5 KB per output pixel per image in
        # fp32 (half that in 16-bit) covers SD 1.5 and SDXL with SDPA, with headroom.
        per_image = width * height * (1536 if self.dtype == torch.float32 else 768)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
        else:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return max(1, min(self.options.max_batch_images, int(free * 0.5) // per_image))

    def generate(
        self,
        params: GenerationParams,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult:
        """Generate ``params.n`` images. Raises BadInput, ModelUnavailable, Canceled or GenerationFailed."""
        out = self.generate_batch([BatchItem(params, on_step=on_step, cancel=cancel)])[0]
        if isinstance(out, SdserveError):
            raise out
        return out

    def generate_batch(self, requests: Sequence[BatchItem]) -> list[GenerationResult | SdserveError]:
        """Run several requests, sharing denoising loops where their batch keys match.

        Returns, per request, its result or the domain error that failed it alone: one bad
        request never fails its neighbours. Out of memory splits the batch and retries.
        """
        results: list[GenerationResult | SdserveError | None] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[tuple[int, BatchItem]]] = {}
        # SD-upscale requests by index: their tiles run as rows of the groups, their results in
        # slots after the requests' own (engine.sd_upscale_run).
        tiled: dict[int, Tiled] = {}
        requests, notes = self.aux.enhance(requests)  # one enhancer call for the whole batch
        for i, req in enumerate(requests):
            try:
                try:
                    item = self._prepare_item(req)
                except BadInput:
                    if req.params.original_prompt is None:
                        raise
                    # The enhancer's text failed the prompt checks: the prompt as sent runs.
                    item = self._prepare_item(self.aux.unenhanced(req, notes[i]))
                if item.params.sd_upscale is not None:
                    tiled[i] = self._sd_upscale_tiles(item)
            except SdserveError as e:
                results[i] = e
                continue
            for t in tiled[i].tiles if i in tiled else ():
                tiled[i].slots.append(len(results))
                results.append(None)
                groups.setdefault(batch_key(t.params), []).append((tiled[i].slots[-1], t))
            if i not in tiled:
                groups.setdefault(batch_key(item.params), []).append((i, item))
        for members in groups.values():
            if members[0][1].params.task == "upscale":  # no model, no loop
                for i, item in members:
                    results[i] = self._run_upscale(item)
                continue
            try:
                model = self.load(members[0][1].params.model)
            except SdserveError as e:
                for i, _ in members:
                    results[i] = e
                continue
            members = self._load_addons(model, members, results)
            if not members:
                continue
            for (i, item), res in zip(members, self._run_group(model, [it for _, it in members]), strict=True):
                if isinstance(res, GenerationResult) and item.params.outpaint is not None:  # the sent pixels kept
                    res.images = keep_original(res.images, item.images["init"], item.images["mask"])
                results[i] = self._upscale_result(res, members[0][1]) if isinstance(res, GenerationResult) else res
        for i, job in tiled.items():  # each SD-upscale request's tiles blended back
            results[i] = job.result(results)
        results = results[:len(requests)]
        for r, extra in zip(results, notes, strict=True):
            if isinstance(r, GenerationResult) and extra:
                r.warnings[:0] = extra
        return [r if r is not None else GenerationFailed("not run") for r in results]

    def _load_addons(self, model: LoadedModel, members: list[tuple[int, BatchItem]],
                     results: list[GenerationResult | SdserveError | None]) -> list[tuple[int, BatchItem]]:
        """Load the group's LoRAs (shared: a bad one fails the group) and each request's
        embeddings (a bad one fails that request) onto ``model``; the members left to run.
        Their bytes count in the model's size, so the memory budget sees them."""
        with self._lock:
            try:
                grown = ensure_loras(model, members[0][1].params.loras, self.addons)
            except SdserveError as e:
                for i, _ in members:
                    results[i] = e
                return []
            if grown:
                self._models.add(model.spec.id, model, self._models.sizes().get(model.spec.id, 0) + grown)
            left = []
            for i, item in members:
                try:
                    ensure_embeddings(model, item.params.embeddings, self.addons)
                except SdserveError as e:
                    results[i] = e
                    continue
                left.append((i, item))
            return left

    def _run_group(self, model: LoadedModel, items: list[BatchItem]) -> list[GenerationResult | SdserveError]:
        t0 = time.perf_counter()
        first = items[0].params
        try:
            with self._lock:
                tiled = self.fast.tile_vae(model.base, *first.output_size)
                with circular_padding(model.base, first.tiling):  # this loop only (seamless.py)
                    per_item = run_batch(model, items, load=self.load, resize=self._resize)
                per_item = [self._restore_faces(it.params, imgs) for it, imgs in zip(items, per_item, strict=True)]
        except Canceled as e:
            return [e for _ in items]
        except SdserveError as e:
            return [e for _ in items]
        except torch.OutOfMemoryError:
            self._free_memory()
            if len(items) > 1:  # retry in halves before failing anyone
                half = len(items) // 2
                log.warning("out of memory on a batch of %d requests; retrying in halves", len(items))
                return self._run_group(model, items[:half]) + self._run_group(model, items[half:])
            p = items[0].params
            return [GenerationFailed(f"out of memory generating {p.n} image(s) at {p.width}x{p.height}")]
        except Exception as e:  # the engine failed on valid input: the server's fault
            if len(items) > 1:  # find the request it failed on: the others must not fail with it
                half = len(items) // 2
                log.warning("a batch of %d requests failed (%s); retrying in halves", len(items), type(e).__name__)
                return self._run_group(model, items[:half]) + self._run_group(model, items[half:])
            log.exception("generation failed for %s", items[0].params.model)
            return [GenerationFailed(f"generation failed: {type(e).__name__}: {e}")]
        elapsed = time.perf_counter() - t0
        checked = self.aux.check(items, per_item)  # flagged images obscured in place
        dtype = str(self.dtype).removeprefix("torch.")
        timings = {"denoise_s": elapsed, "batch_requests": len(items), "vae_tiled": float(tiled),
                   "safety_s": time.perf_counter() - t0 - elapsed}
        provenance = self._provenance(model.spec, first)
        return [flags if isinstance(flags, SdserveError) else
                GenerationResult(params=it.params, images=imgs, seeds=it.params.seeds, device=str(self.device),
                                 dtype=dtype, timings=dict(timings),
                                 warnings=prompt_warnings(model.base, it.params) + _interrupted(it),
                                 provenance=dict(provenance), nsfw=flags)
                for it, imgs, flags in zip(items, per_item, checked, strict=True)]

    # -- upscaling (engine.upscalers, engine.postprocess) ----------------------------------

    def _upscale_images(self, images: list[Image.Image], item: BatchItem) -> list[Image.Image]:
        s = item.params.upscale
        assert s is not None
        on_step = item.on_step
        with self._lock:
            return apply_upscale(images, s, device=self.device, dtype=self.dtype, addons=self.addons,
                                 max_pixels=self.options.max_image_pixels, store=self.addon_store,
                                 on_progress=None if on_step is None else lambda d, t: on_step(StepInfo(d, t)))

    def _sd_upscale_tiles(self, item: BatchItem) -> Tiled:
        """An SD-upscale request's init image upscaled (the script's upscaler and factor) and
        cut into tile rows (engine.sd_upscale_run)."""
        s = item.params.sd_upscale
        assert s is not None
        try:
            with self._lock:
                [big] = apply_upscale([item.images["init"]], upscale_settings(s), device=self.device,
                                      dtype=self.dtype, addons=self.addons, max_pixels=self.options.max_image_pixels,
                                      store=self.addon_store)
        except BadInput as e:
            raise e.renamed({"upscale.upscaler": "sd_upscale.upscaler", "upscale.scale": "sd_upscale.scale"}) from None
        except SdserveError:
            raise
        except torch.OutOfMemoryError:
            self._free_memory()
            raise GenerationFailed("out of memory upscaling the image for SD upscale") from None
        except Exception as e:  # the engine failed on valid input: the server's fault, this request's alone
            log.exception("SD upscale's upscale failed")
            raise GenerationFailed(f"upscale failed: {type(e).__name__}: {e}") from None
        return tile_items(item, big.convert("RGB"))

    def _run_upscale(self, item: BatchItem) -> GenerationResult | SdserveError:
        """An "upscale" job: its init image through the upscaler(s); no model is loaded."""
        t0 = time.perf_counter()
        try:
            if item.cancel is not None and item.cancel():
                raise Canceled("canceled before it started")
            images = self._upscale_images([item.images["init"]], item)
            images = self._restore_faces(item.params, images)
        except SdserveError as e:
            return e
        except torch.OutOfMemoryError:
            self._free_memory()
            return GenerationFailed(f"out of memory upscaling to {item.params.width}x{item.params.height}")
        except Exception as e:  # the engine failed on valid input: the server's fault
            log.exception("upscale failed")
            return GenerationFailed(f"upscale failed: {type(e).__name__}: {e}")
        return GenerationResult(params=item.params, images=images, seeds=item.params.seeds, device=str(self.device),
                                dtype=str(self.dtype).removeprefix("torch."),
                                timings={"upscale_s": time.perf_counter() - t0})

    def _restore_faces(self, p: GenerationParams, images: list[Image.Image]) -> list[Image.Image]:
        """``p``'s face restoration (engine.faces) on its images, on this engine's device:
        after the VAE decode and before the safety checker, or after an upscale job's upscale."""
        if not p.face_restoration:
            return images
        with self._lock:
            return restore_faces(images, p.face_restoration, (p.seeds + [0] * len(images))[:len(images)],
                                 device=self.device, addons=self.addons, store=self.addon_store)

    def _upscale_result(self, res: GenerationResult, item: BatchItem) -> GenerationResult | SdserveError:
        """A generation's images upscaled when it asks (``params.upscale``)."""
        if res.params.upscale is None:
            return res
        t0 = time.perf_counter()
        try:
            res.images = self._upscale_images(res.images, BatchItem(res.params, on_step=None))
        except SdserveError as e:
            return e
        except Exception as e:  # noqa: BLE001 - the server's fault, reported as such
            log.exception("upscale after generation failed")
            return GenerationFailed(f"upscale failed: {type(e).__name__}: {e}")
        res.timings["upscale_s"] = time.perf_counter() - t0
        return res

    def _provenance(self, spec: ModelSpec, p: GenerationParams) -> dict[str, str]:
        """A1111's infotext entries for the files a loop used: the checkpoint's hash (single
        files only: a diffusers folder has no one file to hash), the add-on VAE's name and hash."""
        out: dict[str, str] = {}
        src = spec.source.path
        if src is not None and src.is_file():
            out["Model hash"] = file_sha256(src)[:10]
        if p.vae is not None:
            vae = self.addons.find("vae", p.vae, field="vae")
            out["VAE"], out["VAE hash"] = vae.filename, vae.sha256()[:10]
        return out

    def _free_memory(self) -> None:
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _interrupted(item: BatchItem) -> list[str]:
    """The warning of a request whose loop was interrupted (its images are unfinished)."""
    if item.interrupt is not None and item.interrupt():
        return ["interrupted: the images are decoded from where the denoising loop stood"]
    return []


def _cuda_memory(device: torch.device) -> dict[str, int]:
    """Device memory in bytes: the driver's free/total and the caching allocator's counters
    (current and peak), for monitors such as A1111's /sdapi/v1/memory."""
    free, total = torch.cuda.mem_get_info(device)
    s = torch.cuda.memory_stats(device)
    out = {"free": free, "total": total, "alloc_retries": s.get("num_alloc_retries", 0), "ooms": s.get("num_ooms", 0)}
    for name, key in (("active", "active_bytes"), ("allocated", "allocated_bytes"), ("reserved", "reserved_bytes"),
                      ("inactive", "inactive_split_bytes")):
        out[name] = s.get(f"{key}.all.current", 0)
        out[f"{name}_peak"] = s.get(f"{key}.all.peak", 0)
    return out
