"""RemoteEngine: the service's GenerationEngine, run by a Ray Serve model deployment.

An API replica's job service claims batches from the shared database exactly as in one
process; this engine sends each batch to a model replica (routed by the multiplexed model
id to a replica that already holds the model) and streams its progress back into the
service's step hooks. A replica that dies mid-batch turns into ``Interrupted``, which the
service answers by queueing the jobs again (bounded by ``max_attempts``).

Runs in the API replica, which never imports torch: requests are checked by the engine's
torch-free ``prepare``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ..engine.addon_files import AddonFolders
from ..engine.catalog import Catalog
from ..engine.params import BatchItem, GenerationParams, GenerationResult, StepInfo
from ..engine.checkpoints import CheckpointFolder
from ..engine.prepare import DEFAULT_MAX_PIXELS, prepare
from ..engine.upscalers.checks import check_upscaler_names
from ..errors import Canceled, GenerationFailed, Interrupted, ModelUnavailable, SdserveError
from ..service.jobs import error_from_json, error_to_json

__all__ = ["RemoteEngine", "encode_result", "decode_result"]

log = logging.getLogger(__name__)


def encode_result(result: GenerationResult | SdserveError) -> GenerationResult | dict[str, str]:
    """A batch member's outcome as it crosses to the API replica: results as they are
    (PIL images pickle), errors as their stored form (domain errors do not all unpickle)."""
    return {"error": error_to_json(result)} if isinstance(result, SdserveError) else result


def decode_result(wire: GenerationResult | dict[str, str]) -> GenerationResult | SdserveError:
    return error_from_json(wire["error"]) if isinstance(wire, dict) else wire


def _replica_lost(e: BaseException) -> bool:
    """Whether a failed call means the replica (or its node) went away, not that our code
    raised: the first is worth another attempt elsewhere, the second is not."""
    from ray.exceptions import RayError, RayTaskError
    from ray.serve.exceptions import RayServeException

    if isinstance(e, RayTaskError):
        return isinstance(e.cause, (RayError, RayServeException))
    return isinstance(e, (RayError, RayServeException))


class RemoteEngine:
    """GenerationEngine over a Ray Serve ``DeploymentHandle`` to ``deploy.ray.ModelServer``."""

    def __init__(self, catalog: Catalog, handle: Any, preview_every: int = 0, max_batch_images: int = 8,
                 addons: AddonFolders | None = None) -> None:
        self.catalog = catalog
        # The API replica lists add-on files itself: its folders are the model replicas' (shared storage).
        self.addons = addons or AddonFolders(Path("data/models"))
        # Checkpoints in the shared Stable-diffusion folder, as each model replica's engine finds them.
        self.checkpoints = CheckpointFolder(self.addons)
        catalog.finder = self.checkpoints.find
        catalog.set_found(self.checkpoints.specs())
        self._handle = handle
        self._preview_every = preview_every
        self._batch_cap = max_batch_images
        self._lock = threading.Lock()
        self._replicas: dict[str, dict[str, Any]] = {}  # what each model replica last reported
        self._batch_images: dict[tuple[int, int], int] = {}

    # -- what the service asks of any engine ----------------------------------------------

    def prepare(self, params: GenerationParams, max_pixels: int | None = None) -> GenerationParams:
        p = prepare(self.catalog, params, max_pixels or DEFAULT_MAX_PIXELS, self.addons)
        check_upscaler_names(p, self.addons)  # upscaler files: the model replicas read the same folders
        return p

    def generate(self, params: GenerationParams, on_step: Callable[[StepInfo], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> GenerationResult:
        out = self.generate_batch([BatchItem(params, on_step=on_step, cancel=cancel)])[0]
        if isinstance(out, SdserveError):
            raise out
        return out

    def generate_batch(self, requests: Sequence[BatchItem]) -> list[GenerationResult | SdserveError]:
        """One call per model among ``requests`` (the worker's batches share one model)."""
        results: list[GenerationResult | SdserveError | None] = [None] * len(requests)
        by_model: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            try:
                by_model.setdefault(self.catalog.get(req.params.model).id, []).append(i)
            except SdserveError as e:
                results[i] = e
        for model, idxs in by_model.items():
            for i, res in zip(idxs, self._call(model, [requests[i] for i in idxs]), strict=True):
                results[i] = res
        return [r if r is not None else GenerationFailed("not run") for r in results]

    def caption(self, image: bytes, field: str = "image", timeout_s: float = 600.0) -> str:
        """A caption by a model replica's captioner (its weights live with the replicas)."""
        try:
            out = self._handle.caption.remote(image, field).result(timeout_s=timeout_s)
        except Exception as e:  # noqa: BLE001 - no replica, or it went away: the caller may retry
            log.warning("captioning on a model replica failed: %s", e)
            raise ModelUnavailable(f"no model replica could caption the image ({type(e).__name__})") from None
        if "error" in out:
            raise error_from_json(out["error"])
        return str(out["caption"])

    def annotate(self, name: str, image: Image.Image) -> Image.Image:
        # Units' depth and pose maps are made on the model replicas, inside their jobs; a map
        # alone (A1111's /controlnet/detect) has no call there yet.
        raise ModelUnavailable(f"{name} previews are not served by the Ray deployment yet; use a single-process server")

    def annotators(self) -> list[str]:
        return []

    def max_batch_images(self, width: int, height: int) -> int:
        """What the model replicas last reported fitting one loop at this size (their free
        device memory), else the configured cap. Never a round trip: the worker asks while
        it holds a claimed job, and a busy replica would make it wait. A batch that turns
        out too big is split by the replica's engine on out-of-memory."""
        with self._lock:
            return self._batch_images.get((width, height), self._batch_cap)

    def health(self) -> dict[str, Any]:
        with self._lock:
            replicas = {k: {f: v.get(f) for f in ("device", "dtype", "loaded_models")}
                        for k, v in self._replicas.items()}
        return {"device": "ray", "engine": "ray", "loaded_models": self.loaded_models(), "model_replicas": replicas}

    def refresh_checkpoints(self) -> None:
        """Rescan the checkpoint folder here; model replicas find a new file on their first miss."""
        self.catalog.set_found(self.checkpoints.specs())

    def loaded_models(self) -> list[str]:
        """Models the model replicas reported holding."""
        with self._lock:
            return sorted({m for r in self._replicas.values() for m in r.get("loaded_models", ())})

    def is_available(self, name: str) -> bool:
        """Whether some model replica's machine has the weights (True until one reports:
        a replica without them fails the job with the usual ModelUnavailable)."""
        spec = self.catalog.get(name)
        with self._lock:
            reports = [r["available"] for r in self._replicas.values() if "available" in r]
        return not reports or any(spec.id in a for a in reports)

    def watch(self, every_s: float = 15.0) -> None:
        """Keep what every model replica reports (device, loaded and available models)
        fresh from a daemon thread; replicas not heard from for a while are dropped."""

        def loop() -> None:
            while True:
                try:
                    states = self._handle.broadcast("state").results(timeout_s=2 * every_s, return_exceptions=True)
                except Exception:  # noqa: BLE001 - no replica up yet, or all busy: try again later
                    states = []
                for st in states:
                    if isinstance(st, dict):
                        self._heard(st)
                cutoff = time.monotonic() - 4 * every_s
                with self._lock:
                    self._replicas = {k: v for k, v in self._replicas.items() if v["seen"] >= cutoff}
                    heard = bool(self._replicas)
                time.sleep(every_s if heard else 1.0)  # ask often until the first replica is up

        threading.Thread(target=loop, name="sdserve-model-replicas", daemon=True).start()

    def _heard(self, state: dict[str, Any]) -> None:
        with self._lock:
            self._replicas[state["replica"]] = {**self._replicas.get(state["replica"], {}), **state,
                                                "seen": time.monotonic()}

    # -- the call ------------------------------------------------------------------------

    def _call(self, model: str, items: list[BatchItem]) -> list[GenerationResult | SdserveError]:
        stream = self._handle.options(multiplexed_model_id=model, stream=True).generate.remote(
            [it.params for it in items], self._preview_every)
        try:
            for ev in stream:
                if ev["event"] == "step":
                    hook = items[ev["index"]].on_step
                    if hook is not None:
                        png = ev.get("preview")
                        hook(StepInfo(step=ev["step"], total=ev["total"],
                                      preview=(lambda b=png: b) if png is not None else None))
                    # As in one process: the loop stops only when every member is canceled.
                    if all(it.cancel is not None and it.cancel() for it in items):
                        stream.cancel()
                        return [Canceled("job canceled") for _ in items]
                elif ev["event"] == "done":
                    self._heard(ev["state"])
                    p = items[0].params
                    with self._lock:
                        self._batch_images[(p.width or 0, p.height or 0)] = ev["batch_images"]
                    return [decode_result(r) for r in ev["results"]]
        except Exception as e:  # noqa: BLE001 - every member gets an outcome
            if _replica_lost(e):
                log.warning("model replica lost while running %s: %s", model, e)
                return [Interrupted(f"the model replica running it stopped ({type(e).__name__})") for _ in items]
            log.exception("remote generation failed for %s", model)
            return [GenerationFailed(f"generation failed: {type(e).__name__}: {e}") for _ in items]
        return [Interrupted("the model replica ended the call without a result") for _ in items]
