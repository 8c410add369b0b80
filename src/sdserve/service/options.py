"""How the job service runs, and what it needs of an engine.

Kept apart from JobService so the worker, housekeeping and the composition root
(``sdserve.compose``) can name these types without the service that uses them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from PIL import Image

from ..engine.addon_files import AddonFolders
from ..engine.catalog import Catalog
from ..engine.params import BatchItem, GenerationParams, GenerationResult, StepInfo
from ..errors import SdserveError
from .jobs import Job
from .limits import RequestLimits
from .webhooks import WebhookPolicy

__all__ = ["GenerationEngine", "ServiceOptions", "Observer", "WebhookFormat", "SafetyPolicy"]

SafetyPolicy = Literal["off", "request", "always"]


class GenerationEngine(Protocol):
    """What the service needs of the engine (``sdserve.engine.engine.Engine`` provides it)."""

    catalog: Catalog
    # Add-on files (LoRA, embeddings, VAEs, upscalers, ...) by kind; listed by the API.
    addons: AddonFolders

    def prepare(self, params: GenerationParams, max_pixels: int | None = None) -> GenerationParams:
        """Resolve and check ``params`` (input images up to ``max_pixels``, else the engine's cap)."""

    def generate(
        self,
        params: GenerationParams,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> GenerationResult: ...

    def health(self) -> dict[str, Any]: ...

    def loaded_models(self) -> list[str]: ...

    def refresh_checkpoints(self) -> None:
        """Rescan the checkpoint folder into the catalog (A1111's refresh-checkpoints)."""

    def is_available(self, name: str) -> bool: ...

    def generate_batch(self, requests: Sequence[BatchItem]) -> list[GenerationResult | SdserveError]: ...

    def max_batch_images(self, width: int, height: int) -> int: ...

    def caption(self, image: bytes, field: str = "image") -> str:
        """A caption of an encoded image (BadInput if it does not decode or no captioner)."""

    def annotate(self, name: str, image: Image.Image) -> Image.Image:
        """``image`` through an annotator preprocessor (depth, pose; BadInput naming
        `sdserve pull` when its models are missing)."""

    def annotators(self) -> list[str]:
        """The annotator preprocessors whose models the engine has."""

@dataclass(frozen=True)
class ServiceOptions:
    """How the service runs; the composition root fills it from Settings."""

    max_attempts: int = 3
    preview_every: int = 5
    retention_s: float | None = 7 * 24 * 3600.0
    url_ttl_s: int = 3600
    # Base of output links where no request supplies one (webhook payloads).
    public_url: str = "http://127.0.0.1:8000"
    poll_s: float = 1.0
    heartbeat_s: float = 5.0
    lease_s: float = 30.0
    cleanup_every_s: float = 300.0
    # How long a claimed job waits for compatible company while requests arrive concurrently.
    batch_wait_s: float = 0.005
    webhook: WebhookPolicy = field(default_factory=WebhookPolicy)
    # Batches this process runs at once. One suits a local engine (it runs one loop at a
    # time); an engine that hands batches to remote replicas (Ray) keeps several in flight.
    workers: int = 1
    # This server's name on the jobs it claims (Ray: the API replica's id).
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # How often a running job's progress reaches a database other servers read (not SQLite).
    progress_s: float = 1.0
    # Largest input image (pixels) a request may bring; checked before decoding.
    max_image_pixels: int = 4096 * 4096
    # How the outputs' embedded parameters (A1111-style infotext) name the scheduler. The
    # composition root passes the A1111 dialect's labels, which A1111-family tools read;
    # the service itself knows only the engine's names. A pair is (Sampler, Schedule type),
    # as A1111 1.9+ writes them.
    sampler_label: Callable[[str], str | tuple[str, str | None]] = str
    # What one request may ask for (a key's own limits narrow these).
    limits: RequestLimits = field(default_factory=RequestLimits)
    # Safety checker policy for every dialect (service.safety): off, request or always.
    safety_policy: SafetyPolicy = "request"


# Told "submitted", "started" and "finished" with the job (metrics).
Observer = Callable[[str, Job], None]
# A dialect's completion-webhook body for a finished job (see register_webhook_format).
WebhookFormat = Callable[[Job], dict[str, Any]]
