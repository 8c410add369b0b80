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
from sdserve.engine.hires import HiresFix
from sdserve.engine.params import EmbeddingRef, GenerationParams, InputImage, IPAdapterUnit, LoraRef, Task, input_images, normal_loras
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
    "ENGINE_FIELDS",
    "DEFAULT_RUN_S",
    "Extras",
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

# Engine field names that ModelsLab calls otherwise, so an engine error names what the caller sent.
ENGINE_FIELDS = {"image": "init_image", "mask": "mask_image", "steps": "num_inference_steps",
                 "guidance": "guidance_scale", "n": "samples", "ip_adapter.model": "ip_adapter_id",
                 "ip_adapter.image": "ip_adapter_image", "loras": "lora_model", "embeddings": "embeddings_model",
                 "hires": "highres_fix", "hires.resize_x": "highres_fix",
                 "safety_check": "safety_checker"}
# lora_strength left out: the full strength, as an A1111 tag without a weight.
DEFAULT_LORA_STRENGTH = 1.0
# Seconds one job is assumed to take before any has finished here (for eta and queue_time).
DEFAULT_RUN_S = 5.0
PROCESSING_MESSAGE = "Try to fetch request after given estimated time"
FETCH_PROCESSING_MESSAGE = "Request processing"
TIP = "Your image is processing in background, you can get this image using fetch API"


def in_dialect_terms(err: BadInput) -> BadInput:
    """``err`` with the engine's field name replaced by ModelsLab's (steps -> num_inference_steps)."""
    name = {**ENGINE_FIELDS, **control_fields(MAX_UNITS)}.get(err.field)
    if name is None:
        return err
    out = type(err).__new__(type(err))
    # A field path the message repeats ("control[1].image") is renamed in it too; a plain word
    # is not ("31 is over the limit of 30 steps" keeps its unit).
    path = any(c in err.field for c in ".[")
    BadInput.__init__(out, name, err.detail.replace(err.field, name) if path else err.detail)
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
    for name in ("multi_lingual", "panorama", "self_attention"):
        if getattr(req, name):
            raise BadInput(name, 'is not supported by this server; send "no" (or leave it out)')
    # Set, each would change the image in a way sdserve does not implement yet.
    if (req.controlnet_image or "").strip():
        raise BadInput("controlnet_image", "is not a ModelsLab field; send the hint image as control_image")
    for name in ("algorithm_type", "enhance_style"):
        if (getattr(req, name) or "").strip():
            raise BadInput(name, "is not supported by this server; leave it out (or null)")


def _vae(name: str | None) -> str | None:
    """ModelsLab's ``vae``: a VAE's name in the server's VAE folder; unset or "default": the model's own."""
    name = (name or "").strip()
    return None if name.lower() in ("", "default", "none", "automatic") else name


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def lora_refs(req: GenerateRequest) -> tuple[LoraRef, ...]:
    """``lora_model`` (comma-separated names) with ``lora_strength`` (one value for all, or one each)."""
    names = _names(req.lora_model)
    raw = _names(req.lora_strength)
    if raw and not names:
        raise BadInput("lora_strength", "needs lora_model (the LoRA(s) it applies to)")
    try:
        strengths = [float(s) for s in raw]
    except ValueError:
        raise BadInput("lora_strength", f"{req.lora_strength!r} is not a number or a comma-separated list of numbers") \
            from None
    if len(strengths) == 1:
        strengths *= len(names)
    elif not strengths:
        strengths = [DEFAULT_LORA_STRENGTH] * len(names)
    elif len(strengths) != len(names):
        raise BadInput("lora_strength", f"has {len(strengths)} values for {len(names)} LoRAs in lora_model; "
                                        "send one value, or one per LoRA")
    if any(not -10 <= s <= 10 for s in strengths):
        raise BadInput("lora_strength", "use numbers from -10 to 10")
    return normal_loras([LoraRef(name=n, weight=w) for n, w in zip(names, strengths, strict=True)])


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
        prompt=req.prompt,
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
        loras=lora_refs(req),
        embeddings=tuple(EmbeddingRef(name=n) for n in _names(req.embeddings_model)),
        clip_skip=req.clip_skip or 1,
        vae=_vae(req.vae),
        # Upstream's safety_checker (its default is unconfirmed): off unless asked; the
        # server's policy may turn it on for everyone (service.safety).
        safety_check=bool(req.safety_checker),
        safety_mode=req.safety_checker_type or "black",
        # enhance_prompt defaults to "yes" upstream: the server's enhancer rewrites the prompt
        # (seeded by the request's seed); a server without one says so in the warnings.
        enhance_prompt="off" if req.enhance_prompt is False else "auto",
    )
    if req.highres_fix:
        params = _highres_fix(params, spec, task)
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


def _highres_fix(params: GenerationParams, spec: ModelSpec, task: Task) -> GenerationParams:
    """``highres_fix``: the output keeps the asked size (ModelsLab's 1024 cap holds); the first
    pass runs at half of it and the hires pass (engine.hires, A1111's defaults: Latent
    upscale, strength 0.75, the same steps) brings it to width x height."""
    if task != "txt2img":
        raise BadInput("highres_fix", "applies to text2img only; send \"no\" (or leave it out)")
    width = params.width or spec.defaults.width
    height = params.height or spec.defaults.height
    first = {"width": max(64, width // 16 * 8), "height": max(64, height // 16 * 8)}
    return params.model_copy(update={**first, "hires": HiresFix(resize_x=width, resize_y=height)})


@dataclass(frozen=True)
class Extras:
    """What a reply needs beyond the job's parameters: the caller's flags and image sources."""

    base64: bool = False
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
    return Extras(base64=bool(req.base64), instant_response=bool(req.instant_response), track_id=req.track_id, webhook=req.webhook,
                  init_image=_source_label(req.init_image), mask_image=_source_label(req.mask_image),
                  base_url=base_url)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def meta(job_id: str, p: GenerationParams, x: Extras) -> dict[str, Any]:
    """The parameters actually used (resolved seed, steps, ...), in v3 keys (H, W, n_samples)
    and v6 keys (width, height)."""
    w, h = p.output_size  # with highres_fix, the size asked for (the first pass is half of it)
    out: dict[str, Any] = {
        "H": h, "W": w, "width": w, "height": h, "highres_fix": _yes(p.hires is not None),
        "file_prefix": job_id, "guidance_scale": p.guidance, "model": p.model, "model_id": p.model,
        "n_samples": p.n, "negative_prompt": p.negative_prompt, "num_inference_steps": p.steps,
        "prompt": p.prompt, "safety_checker": _yes(p.safety_check), "safetychecker": _yes(p.safety_check),
        "safety_checker_type": p.safety_mode, "scheduler": p.scheduler, "seed": p.seed, "seeds": p.seeds,
        # "yes" once the enhancer rewrote the prompt (meta.prompt is then its text).
        "steps": p.steps, "enhance_prompt": _yes(p.original_prompt is not None), "base64": _yes(x.base64),
        "instant_response": _yes(x.instant_response),
        # The rest of the documented v3 example's keys, saying what sdserve did: attention is
        # never sliced, outputs sit under "outputs" (file_prefix = the job id), the weights
        # the VAE's name (or "default": the model's own).
        "enable_attention_slicing": "false", "outdir": "outputs", "revision": "main", "vae": p.vae or "default",
        "clip_skip": p.clip_skip,
    }
    if p.upscale is not None:  # ModelsLab's upscale flag, or a super-resolution job
        out["upscale"] = "yes"
        out["scale"], out["upscaler"] = p.upscale.scale, p.upscale.upscaler
    if p.task == "upscale":
        out["init_image"] = x.init_image
    elif p.task != "txt2img":
        out["strength"] = p.strength
        out["init_image"] = x.init_image
    if p.task == "inpaint" and p.outpaint is None:
        out["mask_image"] = x.mask_image
    if p.outpaint is not None:  # the outpaint endpoint: its overlap, and the margins it made
        out["overlap_width"] = p.outpaint.overlap
        out["outpaint"] = p.outpaint.model_dump()
    if x.track_id is not None:
        out["track_id"] = x.track_id
    if p.loras:  # as the caller names them: comma lists, strengths in the same order
        out["lora_model"] = ",".join(r.name for r in p.loras)
        out["lora_strength"] = ",".join(f"{r.weight:g}" for r in p.loras)
    if p.embeddings:
        out["embeddings_model"] = ",".join(e.name for e in p.embeddings)
    return out


def success_body(job_id: str, generation_time: float, output: Sequence[str], meta_: dict[str, Any],
                 track_id: str | None = None, warnings: Sequence[str] = (),
                 nsfw: Sequence[bool | None] = ()) -> dict[str, Any]:
    """The finished job (generation reply, fetch and webhook alike). ``warnings`` (how the
    request was read, e.g. a prompt cut to the text encoder's length) sits beside
    ``nsfw_content_detected``, another note on the result, and only when there are any:
    ``meta`` is the echo of the parameters used. ``nsfw``: the checker's flag per output
    (None: not checked); ``nsfw_content_detected`` is whether any was flagged (a bool, as
    clients test it), ``nsfw_outputs`` the flags, when the checker ran."""
    body: dict[str, Any] = {"status": "success", "generationTime": round(generation_time, 3), "id": job_id,
                            "output": list(output), "proxy_links": list(output),
                            "nsfw_content_detected": any(bool(f) for f in nsfw), "meta": meta_}
    if any(f is not None for f in nsfw):
        body["nsfw_outputs"] = [bool(f) for f in nsfw]
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
