"""GenerationParams: the ONE internal request type every dialect translates into.

Torch-free on purpose: the service stores these in its job table and the API layer builds
them, neither of which may import torch.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image

    from .catalog import ModelSpec

__all__ = [
    "Task",
    "OutputFormat",
    "GenerationParams",
    "GenerationResult",
    "StepInfo",
    "MAX_SEED",
    "random_seed",
    "BatchItem",
    "batch_key",
]

Task = Literal["txt2img", "img2img", "inpaint"]
OutputFormat = Literal["png", "jpeg", "webp"]

# Seeds are drawn below 2**32 so they survive every dialect's integer type (A1111 and
# ModelsLab clients store them in 32-bit fields) and seed+i for a batch stays in range.
MAX_SEED = 2**32 - 1


def random_seed() -> int:
    """A fresh seed for a request that did not bring one."""
    return secrets.randbelow(MAX_SEED - 16)


class GenerationParams(BaseModel):
    """What to generate, in sdserve's own terms.

    Optional fields are ``None`` until :meth:`resolve` fills them from the model's family
    defaults; the service stores the resolved copy, so a job records what actually ran.
    Images travel as encoded bytes (PNG after validation) so the type stays serialisable.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    task: Task = "txt2img"
    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    n: int = Field(default=1, ge=1, le=16)
    scheduler: str | None = None
    init_image: bytes | None = None
    mask_image: bytes | None = None
    output_format: OutputFormat = "png"

    def resolve(self, spec: ModelSpec) -> GenerationParams:
        """A copy with every default filled from ``spec`` and a seed drawn if missing."""
        d = spec.defaults
        # ``is None``, not ``or``: a 0 the caller sent is theirs to be told about (the engine
        # rejects it), not silently replaced by a default.
        return self.model_copy(
            update={
                "model": spec.id,
                "width": d.width if self.width is None else self.width,
                "height": d.height if self.height is None else self.height,
                "steps": d.steps if self.steps is None else self.steps,
                "guidance": d.guidance if self.guidance is None else self.guidance,
                "strength": (1.0 if self.task == "txt2img" else d.strength)
                if self.strength is None
                else self.strength,
                "scheduler": self.scheduler or d.scheduler,
                "seed": random_seed() if self.seed is None else self.seed,
            }
        )

    @property
    def seeds(self) -> list[int]:
        """One seed per image: seed, seed+1, ... (wrapping below 2**32)."""
        base = self.seed or 0
        return [(base + i) % (MAX_SEED + 1) for i in range(self.n)]

    def summary(self) -> dict[str, Any]:
        """The parameters without image bytes, for logs, metadata and job records."""
        out = self.model_dump(exclude={"init_image", "mask_image"})
        # Image bytes are kept apart from stored params (and dropped when a job ends), so
        # the task, which requires them, also counts: a job read back still shows its inputs.
        out["has_init_image"] = self.init_image is not None or self.task in ("img2img", "inpaint")
        out["has_mask_image"] = self.mask_image is not None or self.task == "inpaint"
        return out


@dataclass(frozen=True)
class StepInfo:
    """Progress of one denoising loop, passed to ``on_step`` after each step."""

    step: int
    total: int
    # Called lazily: building a preview costs a decode, so only consumers that want one pay.
    preview: Any = None


@dataclass
class GenerationResult:
    """What the engine made for one GenerationParams: one image and seed per output."""

    params: GenerationParams
    images: list[Image]
    seeds: list[int]
    device: str
    dtype: str
    timings: dict[str, float] = field(default_factory=dict)
    # What the caller should know about how the request was read (e.g. a truncated prompt).
    warnings: list[str] = field(default_factory=list)


def batch_key(p: GenerationParams) -> tuple[Any, ...]:
    """Requests with equal keys can share one denoising loop (see ``engine.batching``).

    Everything that shapes the loop must match: model, task, size, steps, scheduler,
    strength, guidance (one CFG scale per call), and whether a negative prompt is given
    (SDXL encodes "none" as zeros, not as the empty string). Torch-free, so the service's
    worker can group queued jobs without importing the engine's runtime.
    """
    return (p.model, p.task, p.width, p.height, p.steps, p.scheduler, p.strength, p.guidance, bool(p.negative_prompt))


@dataclass
class BatchItem:
    """One request for ``Engine.generate_batch``, with its own progress and cancel hooks.

    ``image``/``mask`` are filled by the engine after decoding ``params``' bytes.
    """

    params: GenerationParams
    image: Image | None = None
    mask: Image | None = None
    on_step: Callable[[StepInfo], None] | None = None
    cancel: Callable[[], bool] | None = None
