"""ComfyUI's ``ckpt_name`` values and the catalog's models.

ComfyUI names a checkpoint by its file in ``models/checkpoints`` (``v1-5-pruned-emaonly.safetensors``
in its default workflow). Each catalog model is listed under one such name: its own file
for a single-file model, the file its upstream repository publishes for a built-in one (so
ComfyUI's default workflows run unchanged), otherwise its slug. A request may also name a
model by id, alias or slug, with or without a file suffix.
"""

from __future__ import annotations

from sdserve.engine.catalog import Catalog, ModelSpec

__all__ = ["UPSTREAM_FILES", "checkpoint_name", "checkpoint_names", "find_checkpoint"]

# Catalog id -> the single-file checkpoints its upstream repository publishes (the first
# is the name /object_info lists).
UPSTREAM_FILES: dict[str, tuple[str, ...]] = {
    "@cf/runwayml/stable-diffusion-v1-5-img2img": (
        "v1-5-pruned-emaonly.safetensors", "v1-5-pruned-emaonly-fp16.safetensors", "v1-5-pruned.safetensors",
        "v1-5-pruned-emaonly.ckpt", "v1-5-pruned.ckpt"),
    "@cf/runwayml/stable-diffusion-v1-5-inpainting": ("sd-v1-5-inpainting.ckpt", "sd-v1-5-inpainting.safetensors"),
    "@cf/stabilityai/stable-diffusion-xl-base-1.0": (
        "sd_xl_base_1.0.safetensors", "sd_xl_base_1.0_0.9vae.safetensors"),
    "@cf/bytedance/stable-diffusion-xl-lightning": ("sdxl_lightning_4step.safetensors",),
    "stabilityai/stable-diffusion-xl-refiner-1.0": (
        "sd_xl_refiner_1.0.safetensors", "sd_xl_refiner_1.0_0.9vae.safetensors"),
}
_SUFFIXES = (".safetensors", ".ckpt")


def checkpoint_name(spec: ModelSpec) -> str:
    """The name /object_info lists for ``spec``."""
    if spec.source.is_single_file and spec.source.path is not None and spec.unet is None:
        return spec.source.path.name
    files = UPSTREAM_FILES.get(spec.id)
    return files[0] if files else f"{spec.slug}.safetensors"


def checkpoint_names(catalog: Catalog) -> list[str]:
    return [checkpoint_name(spec) for spec in catalog]


def find_checkpoint(catalog: Catalog, name: str) -> ModelSpec | None:
    """The model ``name`` refers to (listed name, upstream file, id, alias or slug), or None."""
    for spec in catalog:
        if name == checkpoint_name(spec) or name in UPSTREAM_FILES.get(spec.id, ()):
            return spec
    stem = name
    for suffix in _SUFFIXES:
        stem = stem.removesuffix(suffix)
    for candidate in (name, stem):
        if candidate in catalog:
            return catalog.get(candidate)
    return None
