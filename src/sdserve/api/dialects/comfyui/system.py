"""``/system_stats`` in ComfyUI's shape, without psutil or torch: RAM from the OS, the device
and its memory from the engine's health report (CUDA memory when it runs on a GPU)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

from sdserve import __version__

__all__ = ["system_stats"]


def _ram() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (OSError, ValueError):
        return 0, 0


def _torch_version() -> str:
    try:
        return importlib.metadata.version("torch")  # the installed version, without importing torch here
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def system_stats(health: dict[str, Any]) -> dict[str, Any]:
    total, free = _ram()
    device = str(health.get("device", "cpu"))
    kind, _, index = device.partition(":")
    mem = health.get("device_memory") or {}
    vram_total, vram_free = (mem["total"], mem["free"]) if mem else (total, free)
    reserved, allocated = mem.get("reserved", 0), mem.get("allocated", 0)
    return {
        "system": {"os": sys.platform, "ram_total": total, "ram_free": free,
                   "comfyui_version": f"sdserve {__version__}", "python_version": sys.version,
                   "pytorch_version": _torch_version(), "embedded_python": False, "argv": [],
                   "platform": platform.platform()},
        "devices": [{"name": str(health.get("device_name", device)), "type": kind,
                     "index": int(index) if index.isdigit() else None, "vram_total": vram_total,
                     "vram_free": vram_free, "torch_vram_total": reserved, "torch_vram_free": reserved - allocated}],
    }
