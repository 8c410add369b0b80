"""A job's outputs: an engine result encoded with its parameters embedded, stored in the
artifact store under the job's id, and what is left of a killed attempt removed."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable

from ..engine.hires import infotext_fields
from ..engine.params import GenerationResult
from ..images import CONTENT_TYPES, encode_image, infotext
from .artifacts import ArtifactStore
from .jobs import Output

__all__ = ["encode_outputs", "save_outputs", "drop_orphans", "storage_error"]

log = logging.getLogger(__name__)

_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def encode_outputs(result: GenerationResult, sampler_label: Callable[[str], str | tuple[str, str | None]]
                   ) -> list[Output]:
    """One Output per image, in the requested format, each with its own seed in the metadata
    (A1111-style infotext, naming the scheduler by ``sampler_label``)."""
    p = result.params
    summary = p.summary()
    fmt = p.output_format
    extra = infotext_fields(summary, sampler_label)  # hires fix, refiner
    out = []
    for i, (img, seed) in enumerate(zip(result.images, result.seeds, strict=True)):
        text = infotext(summary, seed, sampler_label(p.scheduler or ""), result.device, result.dtype,
                        result.provenance, extra)
        nsfw = result.nsfw[i] if result.nsfw is not None else None
        out.append(Output(index=i, seed=seed, content_type=CONTENT_TYPES[fmt], data=encode_image(img, fmt, text),
                          nsfw=nsfw))
    return out


def save_outputs(artifacts: ArtifactStore, job_id: str, result: GenerationResult,
                 retention_s: float | None,
                 sampler_label: Callable[[str], str | tuple[str, str | None]]) -> list[Output]:
    """Encode and store ``result`` under ``job_id/``, each output with an unguessable token;
    all of them or (raising) none."""
    now = time.time()
    expires = now + retention_s if retention_s else None
    outs = encode_outputs(result, sampler_label)
    stored: list[str] = []
    try:
        for o in outs:
            o.token = secrets.token_urlsafe(24)
            o.key = f"{job_id}/{o.token}.{_EXT.get(o.content_type, 'bin')}"
            o.size = len(o.data or b"")
            o.expires_at = expires
            artifacts.put(o.key, o.data or b"", o.content_type)
            stored.append(o.key)
    except Exception:
        for key in stored:  # a failed job keeps no half of its outputs (the disk may be full)
            with contextlib.suppress(Exception):
                artifacts.delete(key)
        raise
    return outs


def drop_orphans(artifacts: ArtifactStore, job_id: str) -> None:
    """Before a job runs again: outputs an earlier attempt stored but never recorded (the
    process died between storing and recording them) belong to no result; delete them."""
    try:
        n = artifacts.delete_prefix(f"{job_id}/")
    except Exception:  # noqa: BLE001 - leftovers cost space, not correctness
        log.exception("could not remove the leftovers of job %s", job_id)
        return
    if n:
        log.info("removed %d unrecorded output(s) of job %s's interrupted attempt", n, job_id)


def storage_error(e: Exception) -> str:
    """What the caller may read about a storage failure: the OS's words (no paths) or the
    kind of S3 failure (no endpoints or keys)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()  # e.g. "no space left on device"
    name = type(e).__name__
    if "Connect" in name or "Endpoint" in name:
        return f"the output store could not be reached ({name})"
    response = getattr(e, "response", None)  # botocore's ClientError: the S3 error code
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return f"the output store refused it ({code})" if code else name
