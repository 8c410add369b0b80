"""ComfyUI's model folders (``/models``, ``/models/{folder}``, ``/embeddings``) over the
add-on folders sdserve reads (``engine/addon_files.py``, A1111's layout) and the catalog.

``checkpoints`` lists each catalog model under its ComfyUI file name (``checkpoints.py``)
followed by checkpoint files found in the models folder; the other folders list their
add-on kind's files by their path below the folder, with the suffix, as ComfyUI does.
"""

from __future__ import annotations

from sdserve.engine.addon_files import AddonFolders, AddonKind
from sdserve.engine.catalog import Catalog
from .checkpoints import checkpoint_names

__all__ = ["FOLDER_KINDS", "folder_files", "embedding_names"]

# ComfyUI's folder name -> the add-on kind sdserve keeps there. Only folders whose files
# some node here can use are listed.
FOLDER_KINDS: dict[str, AddonKind] = {
    "checkpoints": "checkpoint",
    "loras": "lora",
    "vae": "vae",
    "embeddings": "embedding",
    "upscale_models": "upscaler",
    "controlnet": "controlnet",
}


def folder_files(folder: str, catalog: Catalog, addons: AddonFolders) -> list[str] | None:
    """The files of a ComfyUI folder (None: no such folder)."""
    kind = FOLDER_KINDS.get(folder)
    if kind is None:
        return None
    files = [f.name + ("" if f.is_dir else f.path.suffix) for f in addons.files(kind)]
    if kind == "checkpoint":
        listed = checkpoint_names(catalog)
        return listed + [f for f in files if f not in listed]
    return files


def embedding_names(addons: AddonFolders) -> list[str]:
    """``/embeddings``: names without the suffix (what prompts write as ``embedding:name``)."""
    return [f.name for f in addons.files("embedding")]
