"""A1111's sampler labels ("DPM++ 2M Karras", ...) for the engine's schedulers.

The engine names its schedulers (``engine/schedulers.py``); these are the names A1111 gives
the same algorithms, which its clients send as ``sampler_name`` and its infotext writes.
The first label of a scheduler is the one A1111 writes.
"""

from __future__ import annotations

from sdserve.engine.schedulers import SCHEDULERS, SchedulerEntry, get_scheduler
from sdserve.errors import BadInput

__all__ = ["LABELS", "lookup_a1111", "a1111_label", "a1111_labels"]

# Engine scheduler name -> A1111 labels. A scheduler A1111 has no name for is left out
# (euler_trailing) and goes by the engine's name.
LABELS: dict[str, tuple[str, ...]] = {
    "euler": ("Euler",),
    "euler_karras": ("Euler Karras",),
    "euler_a": ("Euler a",),
    "heun": ("Heun",),
    "heun_karras": ("Heun Karras",),
    "lms": ("LMS",),
    "lms_karras": ("LMS Karras",),
    "ddim": ("DDIM",),
    "pndm": ("PLMS",),
    "dpmpp_2m": ("DPM++ 2M",),
    "dpmpp_2m_karras": ("DPM++ 2M Karras",),
    "dpmpp_2m_sde": ("DPM++ 2M SDE",),
    "dpmpp_2m_sde_karras": ("DPM++ 2M SDE Karras",),
    "dpmpp_sde": ("DPM++ SDE",),
    "dpmpp_sde_karras": ("DPM++ SDE Karras",),
    "dpm2": ("DPM2",),
    "dpm2_karras": ("DPM2 Karras",),
    "dpm2_a": ("DPM2 a",),
    "dpm2_a_karras": ("DPM2 a Karras",),
    "unipc": ("UniPC",),
    "lcm": ("LCM",),
}

_BY_LABEL = {label.lower(): get_scheduler(name) for name, labels in LABELS.items() for label in labels}
_BY_NAME = {e.name: e for e in SCHEDULERS}


def a1111_labels(entry: SchedulerEntry) -> tuple[str, ...]:
    """A1111's labels for ``entry`` (none where A1111 has no such sampler)."""
    return LABELS.get(entry.name, ())


def lookup_a1111(label: str, field_name: str = "sampler_name") -> SchedulerEntry:
    """The entry for an A1111 sampler label (case-insensitive) or one of our own names."""
    entry = _BY_LABEL.get(label.lower()) or _BY_NAME.get(label)
    if entry is None:
        valid = [lbl for e in SCHEDULERS for lbl in a1111_labels(e)]
        raise BadInput(field_name, f"unknown sampler {label!r}; valid: {', '.join(valid)}")
    return entry


def a1111_label(name: str) -> str:
    """How A1111 would name our scheduler in infotext (our own name where it has none)."""
    labels = LABELS.get(name)
    return labels[0] if labels else name
