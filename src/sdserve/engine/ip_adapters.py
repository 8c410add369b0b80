"""IP-Adapter (image prompt) through diffusers' ``load_ip_adapter``, for one denoising call.

Files come from the ``ipadapter/`` add-on folder; each one's CLIP image encoder is the
nearest ``image_encoder/`` diffusers folder at or above the file (the h94/IP-Adapter layout:
``models/ip-adapter_sd15.safetensors`` beside ``models/image_encoder/``, and the SDXL ones
under ``sdxl_models/``). Encoders and adapter weights are read once and kept.

The adapter changes the UNet's attention processors, which every view of the model shares,
so it is loaded around one call and unloaded after it. diffusers gives every row of a call
the same image prompt, so requests with different images run in loops of their own
(batching.run_batch); the image is encoded once and passed as ``ip_adapter_image_embeds``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import BadInput
from .addon_files import AddonFolders
from .params import IPAdapterUnit

__all__ = ["IPAdapters", "find_image_encoder"]


def find_image_encoder(path: Path, roots: list[Path]) -> Path | None:
    """The nearest ``image_encoder/`` folder from the file's folder up to its add-on root."""
    here = path.parent
    while True:
        if (here / "image_encoder" / "config.json").is_file():
            return here / "image_encoder"
        if any(here == r or here == r.resolve() for r in roots) or here.parent == here:
            return None
        here = here.parent


class IPAdapters:
    """The IP-Adapters and image encoders one engine has read, by file."""

    def __init__(self, addons: AddonFolders, device: torch.device, dtype: torch.dtype) -> None:
        self.addons, self.device, self.dtype = addons, device, dtype
        self._weights: dict[tuple[str, float], dict[str, dict[str, torch.Tensor]]] = {}
        self._encoders: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _load(self, unit: IPAdapterUnit) -> tuple[dict[str, dict[str, torch.Tensor]], Any]:
        from safetensors import safe_open
        from transformers import CLIPVisionModelWithProjection

        f = self.addons.find("ip_adapter", unit.model, field="ip_adapter.model")
        encoder_dir = find_image_encoder(f.path, self.addons.roots("ip_adapter"))
        if encoder_dir is None:
            raise BadInput("ip_adapter.model", f"{unit.model} has no image encoder: put its CLIP vision encoder (a "
                                               "diffusers folder named image_encoder) beside the file")
        with self._lock:
            key = (str(f.path), f.mtime)
            if key not in self._weights:
                sd: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
                if f.path.suffix.lower() == ".safetensors":
                    with safe_open(str(f.path), framework="pt", device="cpu") as fh:
                        for k in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                            part, _, rest = k.partition(".")
                            if part in sd:
                                sd[part][rest] = fh.get_tensor(k)
                else:  # the original .bin: a pickled dict of the two parts, read without code
                    sd = torch.load(str(f.path), map_location="cpu", weights_only=True)
                if not sd.get("image_proj") or not sd.get("ip_adapter"):
                    raise BadInput("ip_adapter.model", f"{unit.model} is not an IP-Adapter (no image_proj/ip_adapter)")
                self._weights[key] = sd
            enc_key = str(encoder_dir)
            if enc_key not in self._encoders:
                encoder: Any = CLIPVisionModelWithProjection.from_pretrained(enc_key, dtype=self.dtype,
                                                                             local_files_only=True)
                self._encoders[enc_key] = encoder.to(self.device).eval()
            return self._weights[key], self._encoders[enc_key]

    @contextmanager
    def applied(self, pipe: Any, unit: IPAdapterUnit | None, image: Image.Image | None,
                cfg: bool) -> Iterator[list[torch.Tensor] | None]:
        """``pipe`` with the adapter loaded at its scale; yields the image prompt's embedding
        (``ip_adapter_image_embeds``: the call's rows share one image), or None without one."""
        if unit is None or image is None:
            yield None
            return
        weights, encoder = self._load(unit)
        pipe.register_modules(image_encoder=encoder)
        try:
            try:
                pipe.load_ip_adapter(weights, subfolder="", weight_name="")
            except (RuntimeError, ValueError, KeyError) as e:  # shapes of another family
                raise BadInput("ip_adapter.model", f"{unit.model} does not fit this model's UNet "
                                                   f"({type(e).__name__}): it is an IP-Adapter for another family") from e
            pipe.set_ip_adapter_scale(unit.scale)
            yield [self._embeds(pipe, image, cfg)]
        finally:
            pipe.unload_ip_adapter()

    def _embeds(self, pipe: Any, image: Image.Image, cfg: bool) -> torch.Tensor:
        from diffusers.models.embeddings import ImageProjection

        hidden = not isinstance(pipe.unet.encoder_hid_proj.image_projection_layers[0], ImageProjection)
        with torch.inference_mode():
            pos, neg = pipe.encode_image(image, self.device, 1, hidden)
        # (1 image, ...), [negative; positive] under CFG: diffusers repeats it for every row.
        return torch.cat([neg[None], pos[None]]) if cfg else pos[None]
