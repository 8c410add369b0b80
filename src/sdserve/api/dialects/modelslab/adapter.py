"""ModelsLab v3/v6 <-> GenerationParams and the reply bodies, as pure functions.

Replies follow reference §3.3: ``success`` (``output`` = image URLs, or base64 strings when
``base64`` is "yes"), ``processing`` (``eta``, ``fetch_result``, ``future_links`` and the
message under both ``messege`` (the upstream typo) and ``message``), ``failed``. Job ids are
sdserve's own unguessable strings, not upstream's integers: the ``modelslab_py`` SDK builds
fetch URLs by string concatenation, and an id is also the capability to read a job's links.
"""

from __future__ import annotations

import base64
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sdserve.engine.catalog import Catalog, ModelSpec
from sdserve.engine.params import GenerationParams, InputImage, IPAdapterUnit, Task, input_images
from sdserve.engine.prepare import size_from_inputs
from sdserve.engine.schedulers import SCHEDULERS, SchedulerEntry
from sdserve.errors import BadInput, UnknownModel
from sdserve.images import decode_base64
from sdserve.engine.control import MAX_UNITS
from .controlnet import control_units, fields as control_fields
from .protocol import GenerateRequest

# ModelsLab's largest side (its schema caps width and height at 1024).
MAX_SIDE = 1024

__all__ = [
    "ENHANCE_SUFFIX",
    "ENGINE_FIELDS",
    "DEFAULT_RUN_S",
    "Extras",
    "enhance_prompt",
    "in_dialect_terms",
    "image_source",
    "resolve_model",
    "resolve_scheduler",
    "to_params",
    "extras_of",
    "meta",
    "success_body",
    "processing_body",
    "fetch_processing_body",
    "failed_body",
    "system_load_body",
    "estimate_run_s",
    "eta_s",
]

# enhance_prompt "yes": upstream rewrites the prompt with a language model (not reproducible).
# sdserve appends these fixed quality phrases, skipping any the prompt already has, so the same
# request always gives the same prompt (and image); meta.prompt shows the result.
ENHANCE_SUFFIX: tuple[str, ...] = ("highly detailed", "sharp focus", "professional lighting", "high quality")
# Engine field names that ModelsLab calls otherwise, so an engine error names what the caller sent.
ENGINE_FIELDS = {"image": "init_image", "mask": "mask_image", "steps": "num_inference_steps",
                 "guidance": "guidance_scale", "n": "samples", "ip_adapter.model": "ip_adapter_id",
                 "ip_adapter.image": "ip_adapter_image"}
# Seconds one job is assumed to take before any has finished here (for eta and queue_time).
DEFAULT_RUN_S = 5.0
PROCESSING_MESSAGE = "Try to fetch request after given estimated time"
FETCH_PROCESSING_MESSAGE = "Request processing"
TIP = "Your image is processing in background, you can get this image using fetch API"


def enhance_prompt(prompt: str) -> str:
    """The prompt with ENHANCE_SUFFIX's phrases appended (those it lacks), deterministically."""
    base = prompt.strip().rstrip(",")
    have = base.lower()
    extra = [p for p in ENHANCE_SUFFIX if p not in have]
    return ", ".join([base, *extra]) if extra else base


def in_dialect_terms(err: BadInput) -> BadInput:
    """``err`` with the engine's field name replaced by ModelsLab's (steps -> num_inference_steps)."""
    name = {**ENGINE_FIELDS, **control_fields(MAX_UNITS)}.get(err.field)
    if name is None:
        return err
    out = type(err).__new__(type(err))
    BadInput.__init__(out, name, err.detail.replace(err.field, name))
    out.status = err.status
    return out


def image_source(text: str, field: str) -> str | bytes:
    """An http(s) URL to fetch (returned as is), or the bytes of a data: URI or bare base64."""
    text = text.strip()
    if text.startswith(("http://", "https://")):
        return text
    if "://" in text[:16] and not text.startswith("data:"):
        raise BadInput(field, f"only http and https URLs are fetched, not {text.split('://', 1)[0]}://")
    return decode_base64(text, field)


def resolve_model(model_id: str | None, catalog: Catalog, default_model: str) -> ModelSpec:
    """The spec for ``model_id`` (id or alias), or the default model when none is named."""
    if model_id is None or not model_id.strip():
        return catalog.get(default_model)
    try:
        return catalog.get(model_id)
    except UnknownModel as e:  # named by ModelsLab's field, like every other bad field
        raise BadInput("model_id", e.message) from None


def resolve_scheduler(name: str | None, karras: bool | None) -> str | None:
    """sdserve's scheduler name for ModelsLab's (a diffusers class name such as
    "DPMSolverMultistepScheduler") or one of sdserve's own; ``use_karras_sigmas`` picks the
    Karras variant. None leaves the model's default."""
    if name is None or not name.strip():
        if karras:
            raise BadInput("use_karras_sigmas", "needs a scheduler to apply to (e.g. DPMSolverMultistepScheduler)")
        return None
    name = name.strip()
    own = {e.name: e for e in SCHEDULERS}
    if name in own:
        entry = own[name]
    else:
        # The first registry entry of a class is its plain (non-Karras, default algorithm) form.
        by_class: dict[str, SchedulerEntry] = {}
        for e in SCHEDULERS:
            by_class.setdefault(e.cls, e)
        if name not in by_class:
            valid = sorted(set(by_class) | set(own))
            raise BadInput("scheduler", f"unknown scheduler {name!r}; valid: {', '.join(valid)}")
        entry = by_class[name]
    if karras and not entry.overrides.get("use_karras_sigmas"):
        variant = own.get(entry.name + "_karras")
        if variant is None:
            raise BadInput("use_karras_sigmas", f"scheduler {name} has no Karras-sigmas variant")
        entry = variant
    return entry.name


def _check_supported(req: GenerateRequest) -> None:
    if req.safety_checker:
        raise BadInput("safety_checker", 'the Stable Diffusion safety checker is not installed on this server; '
                                         'send "no" (or leave it out)')
    for name in ("multi_lingual", "panorama", "self_attention", "upscale"):
        if getattr(req, name):
            raise BadInput(name, 'is not supported by this server; send "no" (or leave it out)')
    for name in ("embeddings_model", "lora_model", "vae"):
        if (getattr(req, name) or "").strip():
            raise BadInput(name, "is not supported by this server; leave it out (or null)")
    if req.clip_skip is not None and req.clip_skip > 1:
        raise BadInput("clip_skip", "is not supported by this server; leave it out (or 1)")


def to_params(req: GenerateRequest, task: Task, spec: ModelSpec, init: bytes | None,
              mask: bytes | None, hints: list[bytes] | None = None, ip_image: bytes | None = None) -> GenerationParams:
    """Translate a ModelsLab request for the route's ``task`` into GenerationParams.

    ``init``/``mask`` are the image bytes already fetched or decoded from the request;
    prepare() checks them, their sizes and the task as for every dialect. Width and height
    left out mean the model's defaults (txt2img) or the input image's size (img2img/inpaint),
    which ModelsLab caps at its own 1024 limit: a parameter of the one rule, not a copy.
    ``hints``: the ControlNet hint images (modelslab/controlnet.py), fetched like init_image;
    ``ip_image``: the IP-Adapter's image prompt, likewise.
    """
    _check_supported(req)
    units, hint_inputs = control_units(req, hints or [])
    adapter = _ip_adapter(req, ip_image)
    if spec.tasks == ("inpaint",) and task != "inpaint":
        raise BadInput("model_id", f"model {spec.id} only inpaints: use /inpaint with init_image and mask_image")
    strength = req.strength if req.strength is not None else req.prompt_strength
    if task != "txt2img" and strength is not None and strength <= 0:
        raise BadInput("strength", "0 would leave the image unchanged: use a number above 0 and at most 1")
    params = GenerationParams(
        model=spec.id,
        task=task,
        prompt=enhance_prompt(req.prompt) if req.enhance_prompt else req.prompt,
        negative_prompt=req.negative_prompt or "",
        prompt_syntax="a1111",  # what ModelsLab's own servers read (A1111-based)
        width=req.width,
        height=req.height,
        steps=req.num_inference_steps,
        guidance=req.guidance_scale,
        strength=strength if task != "txt2img" else None,
        seed=req.seed,
        n=req.samples or 1,
        scheduler=resolve_scheduler(req.scheduler, req.use_karras_sigmas),
        inputs=(*input_images(init=init if task != "txt2img" else None, mask=mask if task == "inpaint" else None),
                *hint_inputs, *([InputImage(role="ip_adapter", data=ip_image)] if adapter and ip_image else [])),
        output_format="png",
        control=units,
        ip_adapter=adapter,
    )
    return size_from_inputs(params, max_side=MAX_SIDE)


def _ip_adapter(req: GenerateRequest, image: bytes | None) -> IPAdapterUnit | None:
    name = (req.ip_adapter_id or "").strip()
    if not name:
        for name in ("ip_adapter_image", "ip_adapter_scale"):
            if getattr(req, name) not in (None, ""):
                raise BadInput(name, "needs ip_adapter_id (the IP-Adapter to apply)")
        return None
    if image is None:
        raise BadInput("ip_adapter_image", "the IP-Adapter needs an image prompt")
    return IPAdapterUnit(model=name, scale=1.0 if req.ip_adapter_scale is None
                         else req.ip_adapter_scale)


@dataclass(frozen=True)
class Extras:
    """What a reply needs beyond the job's parameters: the caller's flags and image sources."""

    base64: bool = False
    enhance_prompt: bool = False
    instant_response: bool = False
    track_id: str | None = None
    webhook: str | None = None
    init_image: str | None = None
    mask_image: str | None = None
    base_url: str = ""


def _source_label(text: str | None) -> str | None:
    # URLs are echoed; inline images are summarised instead of sent back whole.
    if text is None:
        return None
    text = text.strip()
    return text if text.startswith(("http://", "https://")) else "(inline image)"


def extras_of(req: GenerateRequest, base_url: str) -> Extras:
    return Extras(base64=bool(req.base64), enhance_prompt=bool(req.enhance_prompt),
                  instant_response=bool(req.instant_response), track_id=req.track_id, webhook=req.webhook,
                  init_image=_source_label(req.init_image), mask_image=_source_label(req.mask_image),
                  base_url=base_url)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def meta(job_id: str, p: GenerationParams, x: Extras) -> dict[str, Any]:
    """The parameters actually used (resolved seed, steps, ...), in v3 keys (H, W, n_samples)
    and v6 keys (width, height)."""
    out: dict[str, Any] = {
        "H": p.height, "W": p.width, "width": p.width, "height": p.height,
        "file_prefix": job_id, "guidance_scale": p.guidance, "model": p.model, "model_id": p.model,
        "n_samples": p.n, "negative_prompt": p.negative_prompt, "num_inference_steps": p.steps,
        "prompt": p.prompt, "safety_checker": "no", "scheduler": p.scheduler, "seed": p.seed, "seeds": p.seeds,
        "steps": p.steps, "enhance_prompt": _yes(x.enhance_prompt), "base64": _yes(x.base64),
        "instant_response": _yes(x.instant_response),
        # The rest of the documented v3 example's keys, saying what sdserve did: attention is
        # never sliced, outputs sit under "outputs" (file_prefix = the job id), and the weights
        # and VAE are the model's own (the request's vae field is refused).
        "enable_attention_slicing": "false", "outdir": "outputs", "revision": "main", "vae": "default",
    }
    if p.task != "txt2img":
        out["strength"] = p.strength
        out["init_image"] = x.init_image
    if p.task == "inpaint":
        out["mask_image"] = x.mask_image
    if x.track_id is not None:
        out["track_id"] = x.track_id
    return out


def success_body(job_id: str, generation_time: float, output: Sequence[str], meta_: dict[str, Any],
                 track_id: str | None = None, warnings: Sequence[str] = ()) -> dict[str, Any]:
    """The finished job (generation reply, fetch and webhook alike). ``warnings`` (how the
    request was read, e.g. a prompt cut to the text encoder's length) sits beside
    ``nsfw_content_detected``, another note on the result, and only when there are any:
    ``meta`` is the echo of the parameters used."""
    body: dict[str, Any] = {"status": "success", "generationTime": round(generation_time, 3), "id": job_id,
                            "output": list(output), "proxy_links": list(output), "nsfw_content_detected": False,
                            "meta": meta_}
    if warnings:
        body["warnings"] = list(warnings)
    if track_id is not None:
        body["track_id"] = track_id
    return body


def processing_body(job_id: str, eta: float, fetch_url: str, future_links: Sequence[str],
                    meta_: dict[str, Any]) -> dict[str, Any]:
    """The reply of a generation call whose job did not finish within the wait window."""
    return {"status": "processing", "tip": TIP, "eta": round(eta, 2), "messege": PROCESSING_MESSAGE,
            "message": PROCESSING_MESSAGE, "fetch_result": fetch_url, "id": job_id, "output": [],
            "future_links": list(future_links), "proxy_links": list(future_links), "meta": meta_}


def fetch_processing_body(job_id: str, eta: float, fetch_url: str, future_links: Sequence[str]) -> dict[str, Any]:
    """Fetch of a queued or running job (the recorded shape, plus eta and the future links)."""
    return {"status": "processing", "id": job_id, "messege": FETCH_PROCESSING_MESSAGE,
            "message": FETCH_PROCESSING_MESSAGE, "output": [], "eta": round(eta, 2), "fetch_result": fetch_url,
            "future_links": list(future_links)}


def failed_body(job_id: str, reason: str, track_id: str | None = None) -> dict[str, Any]:
    message = f"Failed, Try Again: {reason}" if reason else "Failed, Try Again"
    body: dict[str, Any] = {"status": "failed", "id": job_id, "message": message, "messege": message, "output": []}
    if track_id is not None:
        body["track_id"] = track_id
    return body


def system_load_body(queue_num: int, queue_time: float) -> dict[str, Any]:
    return {"queue_num": queue_num, "queue_time": round(queue_time, 2), "status": "ok"}


def estimate_run_s(durations: Iterable[float]) -> float:
    """Seconds one job takes here: the median of recent run times (DEFAULT_RUN_S before any)."""
    d = [x for x in durations if x >= 0]
    return statistics.median(d) if d else DEFAULT_RUN_S


def eta_s(ahead: int, running: bool, run_s: float) -> float:
    """Seconds until a job is done: the jobs ``ahead`` of it, then its own run (half left if
    it is running already: the mean over where in its run it may be)."""
    return ahead * run_s + (run_s / 2 if running else run_s)
