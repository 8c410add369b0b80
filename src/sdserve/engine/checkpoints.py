"""Checkpoints dropped into A1111's ``models/Stable-diffusion`` folder, served without a restart.

Each ``.safetensors``/``.ckpt`` file (original LDM layout, as civitai ships them) or diffusers
folder there becomes a ModelSpec: its family read from the file itself (SDXL by its second text
encoder, SD 1.5 by its CLIP, an inpainting UNet by its 9 input channels; anything else, such as
SD 2.x, is skipped with a log line), its defaults the family's. Its id is the file name without
the suffix (A1111's ``model_name``), with the file name and A1111's title as aliases.

The catalog asks :meth:`CheckpointFolder.find` on a miss (a file copied in since the last scan
is found by name) and :meth:`CheckpointFolder.specs` on a refresh (A1111's
``refresh-checkpoints``). Reading a safetensors header is a few KB; a ``.ckpt`` is opened with
torch's ``weights_only`` and mmap, so no tensor is read either way.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from .addon_files import AddonFile, AddonFolders
from .catalog import BUILTIN_MODELS, DEMO_SIZE, Arch, ModelSpec, WeightSource

__all__ = ["CheckpointFolder", "detect_family"]

log = logging.getLogger(__name__)

_UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
# Where a family's single files take their component configs when nothing lies beside them.
_CONFIG_REPOS = {("sd15", False): "stable-diffusion-v1-5/stable-diffusion-v1-5",
                 ("sd15", True): "stable-diffusion-v1-5/stable-diffusion-inpainting",
                 ("sdxl", False): "stabilityai/stable-diffusion-xl-base-1.0"}
_DEMO_LAYOUTS = {("sd15", False): "sd15", ("sd15", True): "sd15-inpaint", ("sdxl", False): "sdxl"}


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: v["shape"] for k, v in header.items() if isinstance(v, dict) and "shape" in v}


def _ckpt_shapes(path: Path) -> dict[str, list[int]]:
    import torch

    sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else {}
    return {k: list(v.shape) for k, v in sd.items() if hasattr(v, "shape")}


def _folder_family(path: Path) -> tuple[Arch, bool] | None:
    index = json.loads((path / "model_index.json").read_text())
    cls = str(index.get("_class_name", ""))
    unet = path / "unet" / "config.json"
    inpaint = unet.is_file() and json.loads(unet.read_text()).get("in_channels") == 9
    if cls.startswith("StableDiffusionXL"):
        return ("sdxl", inpaint)
    if cls.startswith("StableDiffusion") and "text_encoder_2" not in index:
        return ("sd15", inpaint)
    return None


def detect_family(path: Path) -> tuple[Arch, bool] | None:
    """(family, inpainting UNet) of a checkpoint file or diffusers folder; None: not one sdserve runs."""
    if path.is_dir():
        return _folder_family(path)
    shapes = _safetensors_shapes(path) if path.suffix == ".safetensors" else _ckpt_shapes(path)
    inpaint = (shapes.get(_UNET_IN) or [0, 0])[1] == 9
    if any(k.startswith("conditioner.embedders.1.") for k in shapes):
        return ("sdxl", inpaint)
    if any(k.startswith("cond_stage_model.transformer.") for k in shapes):
        return ("sd15", inpaint)
    return None  # SD 2.x (OpenCLIP), a bare UNet, a LoRA put in the wrong folder, ...


@dataclass
class CheckpointFolder:
    """The checkpoint add-on folders as catalog entries. ``demo_dir``: single files take
    their configs from the demo models (tiny checkpoints need tiny configs)."""

    addons: AddonFolders
    demo_dir: Path | None = None

    def specs(self) -> list[ModelSpec]:
        """Every servable checkpoint in the folders, rescanned."""
        self.addons.refresh("checkpoint")
        return [s for f in self.addons.files("checkpoint") if (s := self._spec(f)) is not None]

    def find(self, name: str) -> ModelSpec | None:
        """The checkpoint ``name`` (model name, file name or ``title [hash]``) names, if any."""
        stem = name.split(" [", 1)[0].strip()
        try:
            file = self.addons.find("checkpoint", stem, field="model")
        except Exception:  # noqa: BLE001 - a name that is no file here is the catalog's miss
            return None
        return self._spec(file)

    def _spec(self, file: AddonFile) -> ModelSpec | None:
        try:
            family = detect_family(file.path)
        except Exception as e:  # noqa: BLE001 - unreadable: not servable, the others still are
            log.warning("checkpoint %s could not be read (%s); skipped", file.path, type(e).__name__)
            return None
        if family is None or family not in _CONFIG_REPOS:
            log.warning("checkpoint %s is not SD 1.5 or SDXL (txt2img or SD 1.5 inpainting); skipped", file.path)
            return None
        arch, inpaint = family
        base = next(s for s in BUILTIN_MODELS if s.arch == arch and s.unet is None and
                    (s.tasks == ("inpaint",)) == inpaint)
        source = WeightSource(path=file.path)
        defaults = base.defaults
        if not file.is_dir:
            config = (WeightSource(path=self.demo_dir / _DEMO_LAYOUTS[family] / "base") if self.demo_dir
                      else WeightSource(repo=_CONFIG_REPOS[family]))
            # A diffusers folder beside the file (single_file_config's first guess) still wins.
            beside = (file.path.parent / "model_index.json").is_file()
            source = WeightSource(path=file.path, config=None if beside else config)
        if self.demo_dir is not None:
            defaults = replace(defaults, width=DEMO_SIZE, height=DEMO_SIZE)
        return ModelSpec(id=file.name, arch=arch, source=source, defaults=defaults, tasks=base.tasks,
                         description=f"checkpoint {file.path.name} from the Stable-diffusion folder",
                         aliases=tuple(dict.fromkeys(a for a in (f"{file.name}{'' if file.is_dir else file.path.suffix}",
                                                                  file.filename, file.stem) if a != file.name)),
                         demo_layout=base.demo_layout)
