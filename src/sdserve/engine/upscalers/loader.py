"""An upscaler file -> a ready network on the engine's device and dtype, loaded once.

spandrel (the library A1111, ComfyUI and Forge use) reads dozens of architectures (ESRGAN,
SwinIR, DAT, HAT, ...), but it needs torchvision, which is not installed everywhere (its
PyPI wheels need a CUDA torch). So spandrel is used where it imports, and the dominant
format, ESRGAN/Real-ESRGAN's RRDBNet, is also read by our own loader (``rrdbnet.py``), so
those files work on every install. A file neither reads is a BadInput naming the field and
the file; nothing is cached for it and the server goes on serving.

Pickled files (.pth/.pt) are read with ``weights_only=True``: tensors only, no code runs.
Loaded networks are kept by file, modification time, device and dtype in the engine's
model cache (``memory.AddonCache``: they count against the memory budget, an RRDBNet x4
holds 67 MB of fp32 weights); callers without an engine (the bench) use a 1 GB store of this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import BadInput
from ..addon_files import AddonFile
from ..memory import AddonCache, standalone_store
from .rrdbnet import UnsupportedUpscaler, is_rrdbnet, rrdbnet_from_state_dict

__all__ = ["LoadedUpscaler", "load_upscaler", "spandrel_available", "read_state_dict"]

log = logging.getLogger(__name__)

# Without an engine's store: a 1 GB LRU of this module's own.
_OWN = standalone_store()


@dataclass(frozen=True)
class LoadedUpscaler:
    """A network that maps [1, C, H, W] in [0, 1] to [1, C, H*scale, W*scale]."""

    name: str
    scale: int
    run: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    dtype: torch.dtype
    # Input sides must be multiples of this (Real-ESRGAN x2/x1 unshuffle; 1 for most).
    multiple: int
    # Parameters, for the memory report and FLOPs per pixel.
    params: int
    architecture: str


def spandrel_available() -> bool:
    """Whether spandrel imports here (it needs torchvision)."""
    try:
        import spandrel  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or torchvision raising on a CPU torch
        return False
    return True


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors or pickled .pth/.pt file (unwrapping ``params_ema``/
    ``params``/``state_dict``, as Real-ESRGAN and BasicSR releases wrap them)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for wrapper in ("params_ema", "params", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UnsupportedUpscaler("the file holds no state dict of tensors")
    return obj


def _build(file: AddonFile, device: torch.device, dtype: torch.dtype) -> LoadedUpscaler:
    sd = read_state_dict(file.path)
    if is_rrdbnet(sd):
        net = rrdbnet_from_state_dict(sd).to(device=device, dtype=dtype).eval().requires_grad_(False)
        return LoadedUpscaler(file.stem, net.scale, net, device, dtype, net.unshuffle,
                              sum(p.numel() for p in net.parameters()), "RRDBNet (ESRGAN)")
    if not spandrel_available():
        raise UnsupportedUpscaler("it is not an ESRGAN/Real-ESRGAN (RRDBNet) model, the only architecture "
                                  "this install reads; other architectures (SwinIR, DAT, HAT, ...) need the "
                                  "spandrel package (pip install spandrel, which needs torchvision)")
    from spandrel import ImageModelDescriptor, ModelLoader

    desc = ModelLoader().load_from_state_dict(sd)
    if not isinstance(desc, ImageModelDescriptor) or desc.purpose not in ("SR", "Restoration"):
        raise UnsupportedUpscaler(f"spandrel reads it as {type(desc).__name__} ({getattr(desc, 'purpose', '?')}), "
                                  "not an image upscaler")
    desc.to(device).eval()
    if dtype != torch.float32 and (dtype == torch.float16 and desc.supports_half
                                   or dtype == torch.bfloat16 and desc.supports_bfloat16):
        desc.to(dtype)
    used = dtype if next(desc.model.parameters()).dtype == dtype else torch.float32
    return LoadedUpscaler(file.stem, int(desc.scale), desc, device, used, int(desc.size_requirements.multiple_of),
                          sum(p.numel() for p in desc.model.parameters()), f"{desc.architecture.name} (spandrel)")


def load_upscaler(file: AddonFile, device: torch.device, dtype: torch.dtype, *, field: str,
                  store: AddonCache | None = None) -> LoadedUpscaler:
    """The network in ``file`` on ``device``/``dtype`` (cached: in the engine's ``store``, under
    its memory budget, or without one in a small LRU of this module); BadInput naming
    ``field`` and the file when it cannot be read as an upscaler."""
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # CPU half-precision convs are slow or missing
    key = f"upscaler:{file.name}#{file.mtime:.0f}/{device}/{str(dtype).removeprefix('torch.')}"
    return (store or _OWN).get_or_load(key, lambda: _load_checked(file, device, dtype, field),
                                       lambda u: u.params * torch.finfo(u.dtype).bits // 8)


def _load_checked(file: AddonFile, device: torch.device, dtype: torch.dtype, field: str) -> LoadedUpscaler:
    try:
        loaded = _build(file, device, dtype)
    except (UnsupportedUpscaler, OSError, RuntimeError, ValueError, KeyError, EOFError) as e:
        # RuntimeError/pickle errors: a truncated or corrupt file; the caller chose it.
        raise BadInput(field, f"cannot load upscaler {file.stem!r} ({file.filename}): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except Exception as e:  # noqa: BLE001 - pickle.UnpicklingError and friends from a corrupt .pth
        raise BadInput(field, f"cannot load upscaler {file.stem!r} ({file.filename}): "
                              f"not a readable weights file ({type(e).__name__})") from None
    log.info("loaded upscaler %s: %s x%d, %.1fM parameters, %s/%s", file.name, loaded.architecture, loaded.scale,
             loaded.params / 1e6, device, str(loaded.dtype).removeprefix("torch."))
    return loaded
