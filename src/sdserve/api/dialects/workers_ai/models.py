"""Cloudflare's catalog ids for the built-in models (its model search lists them by UUID)."""

from __future__ import annotations

from sdserve.engine.catalog import ModelSpec

__all__ = ["CF_UUIDS", "cf_id"]

# Catalog model id -> Cloudflare's UUID for the same model.
CF_UUIDS: dict[str, str] = {
    "@cf/runwayml/stable-diffusion-v1-5-img2img": "19547f04-7a6a-4f87-bf2c-f5e32fb12dc5",
    "@cf/runwayml/stable-diffusion-v1-5-inpainting": "a9abaef0-3031-47ad-8790-d311d8684c6c",
    "@cf/stabilityai/stable-diffusion-xl-base-1.0": "6d52253a-b731-4a03-b203-cde2d4fae871",
    "@cf/bytedance/stable-diffusion-xl-lightning": "7f797b20-3eb0-44fd-b571-6cbbaa3c423b",
    "@cf/lykon/dreamshaper-8-lcm": "7912c0ab-542e-44b9-b9ee-3113d226a8b5",
}


def cf_id(spec: ModelSpec) -> str:
    """The id the model search reports: Cloudflare's UUID, or ours for a model it lacks."""
    return CF_UUIDS.get(spec.id, spec.id)
