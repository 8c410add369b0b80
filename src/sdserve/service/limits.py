"""Per-request limits: the most steps, side, pixels, images and cost one request may ask for.

The server's settings give one set, a key may carry a tighter one, and the job service
checks the tighter of each right after ``prepare``, before anything is queued. Every
dialect submits through the service, so every dialect refuses the same way: BadInput (a 4xx
in the dialect's shape) naming the field and the limit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from ..engine.params import GenerationParams
from ..errors import BadInput

__all__ = ["RequestLimits", "check_limits"]


@dataclass(frozen=True)
class RequestLimits:
    """Limits on one request; None is no limit. A request of several jobs (A1111's
    ``n_iter``) counts its images and its cost over all of them."""

    max_steps: int | None = None
    max_side: int | None = None
    max_pixels: int | None = None
    max_images: int | None = None
    max_cost: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and v <= 0:
                raise ValueError(f"{f.name} must be above 0 (or unset for no limit), not {v}")

    def tighter(self, other: RequestLimits | None) -> RequestLimits:
        """Each limit the smaller of the two (a key's limits only narrow the server's)."""
        if other is None:
            return self
        pairs = {f.name: (getattr(self, f.name), getattr(other, f.name)) for f in fields(self)}
        return RequestLimits(**{k: b if a is None else a if b is None else min(a, b) for k, (a, b) in pairs.items()})

    def to_json(self) -> str | None:
        set_ = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(set_) if set_ else None

    @classmethod
    def from_json(cls, text: str | None) -> RequestLimits:
        return cls(**json.loads(text)) if text else cls()


def check_limits(p: GenerationParams, cost: float, limits: RequestLimits, jobs: int = 1) -> None:
    """Raise BadInput if the resolved request ``p`` (``jobs`` jobs like it, ``cost`` units
    each) goes over ``limits``."""
    if limits.max_steps is not None and (p.steps or 0) > limits.max_steps:
        raise BadInput("steps", f"{p.steps} is over the limit of {limits.max_steps} steps per request")
    for name in ("width", "height"):
        v = getattr(p, name) or 0
        if limits.max_side is not None and v > limits.max_side:
            raise BadInput(name, f"{v} is over the limit of {limits.max_side} pixels per side")
    pixels = (p.width or 0) * (p.height or 0)
    if limits.max_pixels is not None and pixels > limits.max_pixels:
        raise BadInput("width", f"{p.width}x{p.height} is {pixels} pixels, over the limit of "
                                f"{limits.max_pixels} pixels per image")
    images = p.n * jobs
    if limits.max_images is not None and images > limits.max_images:
        many = f"{p.n} x {jobs} batches = {images}" if jobs > 1 else str(images)
        raise BadInput("n", f"{many} images is over the limit of {limits.max_images} images per request")
    total = cost * jobs
    if limits.max_cost is not None and total > limits.max_cost:
        raise BadInput("cost", f"this request costs {total:g} compute units (steps x CFG x images x size, see "
                               f"docs/jobs.md), over the limit of {limits.max_cost:g} per request; "
                               "ask for fewer steps, images or pixels")
