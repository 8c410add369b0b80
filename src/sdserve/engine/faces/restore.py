"""Restoring the faces of PIL images: detect, align, restore, paste back, blend.

Networks are loaded once per (file, size, modification time, device) and kept (the
detector and one restorer: 110 MB + 350 MB in fp32). They run in fp32 whatever the engine's
dtype, as A1111 runs them: the StyleGAN2 demodulation sums thousands of squared weights,
and a face is one 512x512 pass, so half precision would save little and risk overflow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...errors import BadInput
from ..addon_files import AddonFile, AddonFolders
from ..memory import AddonCache, module_bytes, standalone_store
from ..params import FaceRestoration
from ..upscalers.loader import read_state_dict
from . import check_restorer, detector_file, restorer_file
from .align import paste_face, warp_face
from .detect import detect_faces
from .codeformer import CodeFormer, codeformer_from_state_dict, is_codeformer
from .gfpgan import GFPGANv1Clean, gfpgan_from_state_dict, is_gfpgan
from .retinaface import RetinaFace, is_retinaface, retinaface_from_state_dict

__all__ = ["restore_images", "load_network"]

log = logging.getLogger(__name__)

# Without an engine's store: a 1 GB LRU of this module's own.
_OWN = standalone_store()


def _build(file: AddonFile, is_kind: Callable[[dict[str, torch.Tensor]], bool],
           build: Callable[[dict[str, torch.Tensor]], torch.nn.Module], what: str, field: str) -> torch.nn.Module:
    try:
        sd = read_state_dict(file.path)
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
        if not is_kind(sd):
            raise ValueError(f"it does not hold a {what} network")
        return build(sd)
    except Exception as e:  # noqa: BLE001 - corrupt pickle, wrong keys or shapes: the file's fault
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInput(field, f"cannot load {what} weights {file.filename}: {msg[:300]}") from None


def load_network(file: AddonFile, kind: str, device: torch.device, field: str,
                 store: AddonCache | None = None) -> torch.nn.Module:
    """The ``kind`` ("gfpgan", "codeformer" or "retinaface") network in ``file`` on ``device``, cached: in the
    engine's ``store`` (under its memory budget), or without one in a small LRU here."""
    return (store or _OWN).get_or_load(f"face:{kind}:{file.name}#{file.mtime:.0f}/{device}",
                                       lambda: _load(file, kind, device, field), module_bytes)


def _load(file: AddonFile, kind: str, device: torch.device, field: str) -> torch.nn.Module:
    if kind == "gfpgan":
        net = _build(file, is_gfpgan, gfpgan_from_state_dict, "GFPGAN", field)
    elif kind == "codeformer":
        net = _build(file, is_codeformer, codeformer_from_state_dict, "CodeFormer", field)
    else:
        net = _build(file, is_retinaface, retinaface_from_state_dict, "RetinaFace detector", field)
    net = net.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
    log.info("loaded %s from %s (%.1fM parameters) on %s", kind, file.filename,
             sum(p.numel() for p in net.parameters()) / 1e6, device)
    return net


@torch.inference_mode()
def _restore_one(x: torch.Tensor, detector: RetinaFace, restorer: GFPGANv1Clean | CodeFormer, seed: int,
                 weight: float) -> torch.Tensor:
    """Every face of ``x`` ([1, 3, H, W] in [0, 1]) restored and pasted back. ``weight``:
    CodeFormer's fidelity ``w``, which A1111 passes to the network as it is."""
    gen = torch.Generator().manual_seed(seed)
    out = x
    for face in detect_faces(detector, x[0]):
        crop, m = warp_face(x, np.array(face.landmarks), restorer.size)
        if isinstance(restorer, CodeFormer):
            face_out = restorer(crop * 2 - 1, w=weight)
        else:
            face_out = restorer(crop * 2 - 1, generator=gen)
        restored = (face_out.clamp(-1, 1) + 1) / 2
        out = paste_face(out, restored, m)
    return out


def restore_images(images: Sequence[Image.Image], steps: Sequence[FaceRestoration], seeds: Sequence[int], *,
                   device: Any, addons: AddonFolders, field: str = "face_restoration",
                   store: AddonCache | None = None) -> list[Image.Image]:
    dev = torch.device(device)
    out = []
    for im, seed in zip(images, seeds, strict=True):
        x = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)
        x = x.permute(2, 0, 1)[None].to(dev)
        for step in steps:
            if step.visibility <= 0:
                continue
            name = check_restorer(addons, step.model, field=field)  # the files may have gone since submit
            restorer_path, detector_path = restorer_file(addons, name), detector_file(addons)
            assert restorer_path is not None and detector_path is not None
            detector = load_network(detector_path, "retinaface", dev, field, store)
            restorer = load_network(restorer_path, name.lower(), dev, field, store)
            restored = _restore_one(x, detector, restorer, seed, step.weight)  # type: ignore[arg-type]
            x = x + (restored - x) * step.visibility  # A1111's Image.blend(original, restored, visibility)
        arr = (x[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        out.append(Image.fromarray(arr, "RGB"))
    return out
