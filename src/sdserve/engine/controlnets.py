"""ControlNet models: loaded once from the ``ControlNet/`` add-on folder, kept, and shared by
every base model of their family.

A diffusers folder loads with ``from_pretrained``. A single file (A1111's layout, or
diffusers' own keys as in ``diffusers_xl_*.safetensors``) needs a config: the ``.yaml``
next to it when there is one (the original LDM config, as the A1111 extension ships them),
else the one a ControlNet of the base model's UNet has (a ControlNet copies its base UNet's
encoder), so no file is fetched at request time.
"""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import torch

from ..errors import BadInput
from .addon_files import AddonFile, AddonFolders
from .memory import AddonCache

__all__ = ["ControlNets"]

log = logging.getLogger(__name__)


class ControlNets:
    """The loaded ControlNets of one engine, by file (reloaded when the file changes), kept in
    the engine's model cache (``memory.AddonCache``: under its byte budget and LRU)."""

    def __init__(self, addons: AddonFolders, device: torch.device, dtype: torch.dtype, store: AddonCache) -> None:
        self.addons, self.device, self.dtype, self._store = addons, device, dtype, store

    def get(self, name: str, unet: Any, field: str = "control.model") -> Any:
        """The ControlNet ``name`` on the engine's device, checked against the base ``unet``."""
        f = self.addons.find("controlnet", name, field=field)
        model = self._store.get_or_load(f"controlnet:{f.name}#{f.mtime:.0f}", lambda: self._load(f, unet, field), _bytes)
        _check_fits(model, unet, name, field)
        return model

    def bytes(self) -> int:
        """Bytes of weights the loaded ControlNets hold (the engine's health reports it)."""
        return self._store.bytes("controlnet")

    def _load(self, f: AddonFile, unet: Any, field: str) -> Any:
        from diffusers import ControlNetModel

        try:
            if f.is_dir:
                model = ControlNetModel.from_pretrained(str(f.path), torch_dtype=self.dtype, local_files_only=True)
            else:
                model = self._single_file(ControlNetModel, f, unet)
        except Exception as e:  # noqa: BLE001 - unreadable or another architecture: name the file
            log.warning("ControlNet %s failed to load: %r", f.path, e)
            raise BadInput(field, f"{f.name} could not be loaded as a ControlNet for this model "
                                  f"({type(e).__name__}: {str(e)[:200]})") from e
        model.to(self.device, self.dtype).eval()
        log.info("loaded ControlNet %s (%.2f GB)", f.name, _bytes(model) / 1e9)
        return model

    def _single_file(self, cls: Any, f: AddonFile, unet: Any) -> Any:
        common: dict[str, Any] = {"torch_dtype": self.dtype, "local_files_only": True}
        yaml = f.path.with_suffix(".yaml")
        if yaml.is_file():
            return cls.from_single_file(str(f.path), original_config=str(yaml), **common)
        # No config beside the file: the one of a ControlNet for the base UNet, written to a
        # scratch folder because from_single_file takes configs from folders.
        with tempfile.TemporaryDirectory(prefix="sdserve-controlnet-") as tmp:
            with torch.device("meta"):
                cls.from_unet(unet, load_weights_from_unet=False).save_config(tmp)
            return cls.from_single_file(str(f.path), config=tmp, **common)


def _bytes(module: Any) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _check_fits(model: Any, unet: Any, name: str, field: str) -> None:
    # The prepare-time family check reads file headers; this is the exact one (a pickled
    # file, or an SD 2 ControlNet on an SD 1.5 model, gets here).
    want, got = unet.config.cross_attention_dim, model.config.cross_attention_dim
    if want != got:
        raise BadInput(field, f"{name} cross-attends to {got}-wide text embeddings but the model's UNet uses {want}: "
                              "it is a ControlNet for another family")
