"""A1111's add-on listings: ``/sdapi/v1/loras`` and ``/sdapi/v1/embeddings`` in its shapes.

Built from the server's add-on folders (``engine.addon_files``), read without torch
(``engine.addon_info``): the Lora extension's ``{name, alias, path, metadata}`` per file, and the
embeddings split as A1111 splits them into ``loaded`` (fit the current checkpoint's family) and
``skipped`` (another family, or unreadable).
"""

from __future__ import annotations

from typing import Any

from sdserve.engine.addon_files import AddonFile
from sdserve.engine.addon_info import embedding_info, lora_metadata

__all__ = ["lora_items", "embedding_listing"]


def lora_items(files: list[AddonFile]) -> list[dict[str, Any]]:
    """One entry per LoRA; ``alias`` is kohya's ``ss_output_name`` when the file has one (A1111's rule)."""
    out = []
    for f in files:
        meta = lora_metadata(f)
        alias = meta.get("ss_output_name") if isinstance(meta.get("ss_output_name"), str) else None
        out.append({"name": f.stem, "alias": alias or f.stem, "path": str(f.path), "metadata": meta})
    return out


def embedding_listing(files: list[AddonFile], arch: str) -> dict[str, dict[str, Any]]:
    """``{"loaded": {...}, "skipped": {...}}`` for a checkpoint of family ``arch`` (sd15 / sdxl)."""
    loaded: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    for f in files:
        info = embedding_info(f)
        entry = {"step": info.step if info else None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                 "shape": info.shape if info else None, "vectors": info.vectors if info else None}
        fits = info is not None and info.sdxl == (arch == "sdxl")
        (loaded if fits else skipped)[f.stem] = entry
    return {"loaded": loaded, "skipped": skipped}
