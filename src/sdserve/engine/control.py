"""ControlNet units checked before a request is queued, without torch.

A unit names a ControlNet in the ``ControlNet/`` add-on folder (a diffusers folder or a
single file); its family (SD 1.5 or SDXL) is read from the folder's config.json or from
the single file's tensor names (safetensors header only; nothing is loaded), so a ControlNet
for the other family is refused naming the field rather than failing inside the loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import BadInput
from .addon_files import AddonFile, AddonFolders
from .params import GenerationParams
from .preprocessors import canonical, check_preprocessor

__all__ = ["MAX_UNITS", "check_control", "check_ip_adapter", "controlnet_family", "ip_adapter_family", "unit_field"]

# A1111's ControlNet extension defaults to 3 units (its setting allows up to 10); each unit
# is one more ControlNet pass per step, so the cap keeps one request's cost bounded.
MAX_UNITS = 4


def unit_field(index: int, name: str) -> str:
    """The engine's field name for a unit's setting (dialects rename it into theirs)."""
    return f"control[{index}].{name}"


def controlnet_family(f: AddonFile) -> str | None:
    """"sdxl" or "sd15" for a ControlNet on disk; None when its format does not say (a pickled
    single file: the engine checks it on load)."""
    if f.is_dir:
        try:
            cfg = json.loads((f.path / "config.json").read_text())
        except (OSError, ValueError):
            return None
        return "sdxl" if cfg.get("addition_embed_type") == "text_time" else "sd15"
    if f.path.suffix.lower() != ".safetensors":
        return None
    keys = _safetensors_keys(f.path)
    if keys is None:
        return None
    # SDXL's UNet (and so its ControlNets) embeds the size/crop numbers: "label_emb" in the
    # original layout, "add_embedding" in diffusers' single files. SD 1.5's has neither.
    return "sdxl" if any(".label_emb." in k or k.startswith(("add_embedding.", "control_model.label_emb"))
                         for k in keys) else "sd15"


def _safetensors_header(path: Path) -> dict[str, Any] | None:
    # The header is a little-endian u64 length then JSON: read it alone (the file may be GBs).
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 0 < n < 100_000_000:
                return None
            header = json.loads(fh.read(n))
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def _safetensors_keys(path: Path) -> list[str] | None:
    header = _safetensors_header(path)
    return [k for k in header if k != "__metadata__"] if header is not None else None


def check_control(p: GenerationParams, arch: str, addons: AddonFolders | None) -> None:
    """Each unit: a known ControlNet of the base model's family, a known preprocessor,
    sensible settings, and a control image; BadInput naming the unit's field otherwise."""
    if not p.control:
        return
    if len(p.control) > MAX_UNITS:
        raise BadInput("control", f"{len(p.control)} ControlNet units sent; at most {MAX_UNITS} per request")
    modes = {u.control_mode for u in p.control}
    for i, u in enumerate(p.control):
        if u.control_mode == "prompt":
            raise BadInput(unit_field(i, "control_mode"),
                           "'My prompt is more important' is not available here (diffusers has no such mode); "
                           "use Balanced or 'ControlNet is more important'")
        if len(modes) > 1:
            raise BadInput(unit_field(i, "control_mode"), "all units of a request must share one control mode "
                                                          "(diffusers applies it to the whole step)")
        if u.guidance_start >= u.guidance_end:
            raise BadInput(unit_field(i, "guidance_start"), f"{u.guidance_start} must be below guidance_end "
                                                            f"({u.guidance_end})")
        check_preprocessor(u.preprocessor, unit_field(i, "preprocessor"))
        if canonical(u.preprocessor) == "inpaint" and p.mask_image is None:
            raise BadInput(unit_field(i, "preprocessor"), "inpaint needs the request's mask (white = repaint)")
        if p.input("control", i) is None:
            raise BadInput(unit_field(i, "image"), "this unit has no control image")
        if addons is None:
            continue
        f = addons.find("controlnet", u.model, field=unit_field(i, "model"))
        family = controlnet_family(f)
        if family is not None and family != arch:
            raise BadInput(unit_field(i, "model"), f"{u.model} is a ControlNet for {_FAMILY[family]}, but the "
                                                   f"model is {_FAMILY.get(arch, arch)}; pick one of its family")
    extra = sorted(i.index for i in p.inputs if i.role == "control" and i.index >= len(p.control))
    if extra:
        raise BadInput(unit_field(extra[0], "image"), "a control image without a ControlNet unit")


_FAMILY = {"sd15": "SD 1.5", "sdxl": "SDXL"}


def ip_adapter_family(f: AddonFile) -> str | None:
    """"sd15" or "sdxl" for an IP-Adapter file whose text-embedding width says so (768 or
    2048); None otherwise (the engine compares it with the loaded UNet's exactly)."""
    if f.path.suffix.lower() != ".safetensors":
        return None
    width = _safetensors_shape(f.path, "ip_adapter.1.to_k_ip.weight")
    return {768: "sd15", 2048: "sdxl"}.get(width[1]) if width and len(width) == 2 else None


def _safetensors_shape(path: Path, key: str) -> list[int] | None:
    entry = (_safetensors_header(path) or {}).get(key)
    return entry.get("shape") if isinstance(entry, dict) else None


def check_ip_adapter(p: GenerationParams, arch: str, addons: AddonFolders | None) -> None:
    """An IP-Adapter the server has, of the model's family, with its image."""
    if p.ip_adapter is None:
        if p.input("ip_adapter") is not None:
            raise BadInput("ip_adapter.image", "an IP-Adapter image without an IP-Adapter model")
        return
    if p.input("ip_adapter") is None:
        raise BadInput("ip_adapter.image", "the IP-Adapter needs an image (the image prompt)")
    if addons is None:
        return
    f = addons.find("ip_adapter", p.ip_adapter.model, field="ip_adapter.model")
    family = ip_adapter_family(f)
    if family is not None and family != arch:
        raise BadInput("ip_adapter.model", f"{p.ip_adapter.model} is an IP-Adapter for {_FAMILY[family]}, but the "
                                           f"model is {_FAMILY.get(arch, arch)}")
