"""The engine's auxiliary models at work: which are installed, loading them into the
engine's model cache (one memory budget and LRU with the diffusion models), and the jobs
they do for a batch: enhance its prompts before the loop, check its images after it, caption
an image on request, and make ControlNet units' depth and pose maps (the annotators)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ...errors import BadInput, GenerationFailed, SdserveError
from ...images import decode_image
from ..control import unit_field
from ..memory import ModelCache
from ..params import BatchItem, GenerationParams
from ..preprocessors import ANNOTATORS, canonical
from .annotators import DepthEstimator, PersonDetector, PoseEstimator
from .filters import obscure
from .models import MAX_PROMPT_CHARS, AuxModel, Captioner, Enhancer, SafetyChecker, load_aux
from .specs import AUX_KINDS, AuxKind, AuxSpec, aux_available, missing_models, unavailable

__all__ = ["Auxiliary"]

log = logging.getLogger(__name__)


class Auxiliary:
    """The auxiliary models of one engine (its cache, lock, device and dtype)."""

    def __init__(self, specs: dict[AuxKind, AuxSpec], cache: ModelCache[Any], lock: threading.RLock,
                 device: torch.device, dtype: torch.dtype, free_memory: Callable[[], None],
                 demo_dir: Path | None = None) -> None:
        self.specs = specs
        self._cache = cache
        self._lock = lock
        self._device = device
        self._dtype = dtype
        self._free_memory = free_memory
        self._demo_dir = demo_dir  # where demo mode writes its tiny models on first use

    # -- what is installed ----------------------------------------------------------------

    def available(self, kind: AuxKind) -> bool:
        spec = self.specs.get(kind)
        if spec is None:
            return False
        return self._is_demo(spec) or aux_available(spec)

    def _is_demo(self, spec: AuxSpec) -> bool:
        path = spec.source.path
        return self._demo_dir is not None and path is not None and path.is_relative_to(self._demo_dir)

    def require(self, params: GenerationParams) -> None:
        """Refuse (4xx naming `sdserve pull`) a request needing a model the server lacks."""
        if params.safety_check and not self.available("safety-checker"):
            raise unavailable("safety-checker", "safety_check", "safety-checker" in self.specs)
        if params.enhance_prompt == "on" and not self.available("enhancer"):
            raise unavailable("enhancer", "enhance_prompt", "enhancer" in self.specs)
        for i, u in enumerate(params.control):
            self.require_annotator(u.preprocessor, unit_field(i, "preprocessor"))

    def require_annotator(self, name: str, field: str) -> None:
        """Refuse (4xx naming ``field`` and the `sdserve pull` commands) preprocessor ``name``
        when it runs models this server lacks; other preprocessors pass."""
        annotator = ANNOTATORS.get(canonical(name))
        if annotator is None:
            return
        missing = [k for k in annotator.kinds if not self.available(k)]
        if missing:
            raise missing_models(f"preprocessor {name!r}", missing, field, set(self.specs))

    def annotators(self) -> list[str]:
        """The annotator preprocessors whose models this server has."""
        return [a.name for a in ANNOTATORS.values() if all(self.available(k) for k in a.kinds)]

    def health(self) -> dict[str, str]:
        """Each kind: loaded, installed, not pulled, or off (no model configured)."""
        loaded = set(self._cache.sizes())
        out: dict[str, str] = {}
        for kind in AUX_KINDS:
            spec = self.specs.get(kind)
            out[kind] = ("off" if spec is None else "loaded" if spec.id in loaded
                         else "installed" if self.available(kind) else "not pulled")
        return out

    # -- loading --------------------------------------------------------------------------

    def _model(self, kind: AuxKind) -> AuxModel:
        """The loaded model of ``kind`` (loading it, the LRU making room). Call under the lock."""
        spec = self.specs.get(kind)
        if spec is None:
            raise unavailable(kind, kind.replace("-", "_"), configured=False)
        model = self._cache.get(spec.id)
        if model is not None:
            return model  # type: ignore[no-any-return]
        if self._is_demo(spec) and not aux_available(spec):
            from .tiny import write_tiny_aux

            assert spec.source.path is not None
            log.warning("DEMO MODE: writing a tiny random-weight %s to %s", kind, spec.source.path)
            write_tiny_aux(spec.source.path.parent, (kind,))
        # Under the byte budget and LRU, in no model slot: a checker or a detector + pose pair
        # must not push a diffusion model out by the count cap.
        if self._cache.make_room(self._cache.known_size(spec.id), counted=False):
            self._free_memory()
        t0 = time.perf_counter()
        try:
            model = load_aux(spec, self._device, self._dtype)
        except SdserveError:
            raise
        except Exception as e:  # noqa: BLE001 - corrupt or partial weights: the operator's to fix
            log.exception("could not load %s from %s", kind, spec.source.describe())
            raise GenerationFailed(f"the {kind} could not be loaded ({type(e).__name__}); "
                                   f"the operator can run `sdserve pull {kind}` again") from e
        size = model.nbytes()
        self._cache.add(spec.id, model, size, counted=False)
        log.info("loaded %s (%.1f MB) from %s in %.1fs", spec.id, size / 1e6, spec.source.describe(),
                 time.perf_counter() - t0)
        return model

    # -- enhancing prompts (before the loop) ----------------------------------------------

    def enhance(self, items: Sequence[BatchItem]) -> tuple[list[BatchItem], list[list[str]]]:
        """``items`` with the prompts that ask for it rewritten (one batched call for all),
        and per item the warnings to pass on. Seeded by each request's seed: the same request
        gets the same prompt. An empty, unchanged or over-long rewrite, or an enhancer that
        fails, leaves the prompt as sent, with a warning: the image is still made."""
        out, notes = list(items), [[] for _ in items]  # type: tuple[list[BatchItem], list[list[str]]]
        want = [i for i, it in enumerate(items)
                if it.params.enhance_prompt != "off" and it.params.original_prompt is None]
        if not want:
            return out, notes
        if not self.available("enhancer"):
            for i in want:
                notes[i].append("enhance_prompt: this server has no prompt enhancer (the operator can run "
                                "`sdserve pull enhancer`); the prompt was used as sent")
            return out, notes
        prompts = [items[i].params.prompt for i in want]
        try:
            with self._lock:
                enhancer = self._model("enhancer")
                assert isinstance(enhancer, Enhancer)
                texts = enhancer.enhance(prompts, [items[i].params.seed or 0 for i in want])
        except Exception as e:  # noqa: BLE001 - enhancement is a nicety: the image is still made
            log.exception("the prompt enhancer failed")
            for i in want:
                notes[i].append(f"enhance_prompt: the prompt enhancer failed ({type(e).__name__}); "
                                "the prompt was used as sent")
            return out, notes
        for i, original, text in zip(want, prompts, texts, strict=True):
            if not text or text.strip() == original.strip():
                notes[i].append("enhance_prompt: the enhancer added nothing; the prompt was used as sent")
            elif len(text) > MAX_PROMPT_CHARS:
                notes[i].append(f"enhance_prompt: the enhanced prompt was over {MAX_PROMPT_CHARS} characters; "
                                "the prompt was used as sent")
            else:
                it = items[i]
                params = it.params.model_copy(update={"prompt": text, "original_prompt": original})
                out[i] = BatchItem(params, it.images, it.on_step, it.cancel)
        return out, notes

    @staticmethod
    def unenhanced(item: BatchItem, notes: list[str]) -> BatchItem:
        """``item`` with the prompt it was sent with (the enhancer's failed the prompt checks)."""
        notes.append("enhance_prompt: the enhanced prompt did not pass the prompt checks; the prompt was used as sent")
        p = item.params.model_copy(update={"prompt": item.params.original_prompt, "original_prompt": None})
        return BatchItem(p, item.images, item.on_step, item.cancel)

    # -- checking images (after the loop) -------------------------------------------------

    def check(self, items: Sequence[BatchItem],
              per_item: list[list[Image.Image]]) -> list[list[bool] | None | SdserveError]:
        """Per item: its images' flags (flagged images obscured in ``per_item`` in place),
        None when it did not ask, or the error failing it: a checker that fails returns no
        unchecked image (fail closed). All asking items' images go in one batch."""
        asking = [i for i, it in enumerate(items) if it.params.safety_check]
        result: list[list[bool] | None | SdserveError] = [None] * len(items)
        if not asking:
            return result
        images = [img for i in asking for img in per_item[i]]
        try:
            with self._lock:
                checker = self._model("safety-checker")
                assert isinstance(checker, SafetyChecker)
                flags = checker.check(images)
        except Exception as e:  # noqa: BLE001 - whatever broke, the images stay unseen
            log.exception("the safety checker failed")
            err = e if isinstance(e, BadInput) else GenerationFailed(
                f"the safety checker failed ({type(e).__name__}); no unchecked image is returned")
            for i in asking:
                result[i] = err
            return result
        pos = 0
        for i in asking:
            n = len(per_item[i])
            mine = flags[pos:pos + n]
            pos += n
            mode = items[i].params.safety_mode
            per_item[i] = [obscure(img, mode) if bad else img for img, bad in zip(per_item[i], mine, strict=True)]
            result[i] = mine
        return result

    # -- captioning -----------------------------------------------------------------------

    def caption(self, data: bytes, field: str, max_pixels: int) -> str:
        """A caption of the encoded image ``data`` (BadInput naming ``field`` if it does not
        decode, or when the server has no captioner)."""
        image = decode_image(data, field, max_pixels)
        if not self.available("captioner"):
            raise unavailable("captioner", "model", "captioner" in self.specs)
        with self._lock:
            captioner = self._model("captioner")
            assert isinstance(captioner, Captioner)
            return captioner.caption(image)

    # -- ControlNet annotators (preprocessors with a network) -------------------------------

    def annotate(self, name: str, image: Image.Image) -> Image.Image:
        """``image`` through annotator ``name`` (a key of preprocessors.ANNOTATORS) on the
        engine's device: a depth map, or the OpenPose skeletons of the people in it. BadInput
        naming `sdserve pull` when its models are missing."""
        self.require_annotator(name, "preprocessor")
        with self._lock:
            if name == "openpose":
                detector, pose = self._model("person-detector"), self._model("pose")
                assert isinstance(detector, PersonDetector) and isinstance(pose, PoseEstimator)
                return pose.skeleton(image, detector.people(image))
            (kind,) = ANNOTATORS[name].kinds
            depth = self._model(kind)
            assert isinstance(depth, DepthEstimator)
            return depth.depth_map(image)
