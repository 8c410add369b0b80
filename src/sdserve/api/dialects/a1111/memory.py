"""``/sdapi/v1/memory`` in A1111's shape (``modules/api/api.py`` ``get_memory``), without psutil
or torch: RAM from the OS, device memory from the engine's health report.

A1111 reports ``ram.used`` as its own process's resident size and ``ram.free`` as the total
minus that; sdserve does the same so monitors that read it show the same numbers. A part that
cannot be measured is ``{"error": ...}``, as upstream answers.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["ram_info", "cuda_info"]


def _rss_bytes() -> int:
    # /proc/self/statm: size resident shared ... in pages (Linux).
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ram_info() -> dict[str, Any]:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        used = _rss_bytes()
    except (OSError, ValueError, IndexError) as e:
        return {"error": str(e)}
    return {"free": total - used, "used": used, "total": total}


def cuda_info(health: dict[str, Any]) -> dict[str, Any]:
    """The ``cuda`` part from ``Engine.health()``: present only when the engine runs on a CUDA device."""
    mem = health.get("device_memory")
    if not mem:
        return {"error": "unavailable"}
    return {
        "system": {"free": mem["free"], "used": mem["total"] - mem["free"], "total": mem["total"]},
        **{k: {"current": mem[k], "peak": mem[f"{k}_peak"]} for k in ("active", "allocated", "reserved", "inactive")},
        "events": {"retries": mem["alloc_retries"], "oom": mem["ooms"]},
    }
