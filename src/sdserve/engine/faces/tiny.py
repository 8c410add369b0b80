"""Tiny random-weight face restorer and detector in the real file formats (demo mode,
make-tiny, tests).

``tiny-GFPGANv1.4.pth``: GFPGANv1Clean with 4/8 channels instead of 32-512, restoring
128x128 faces instead of 512x512 (alignment scales the template to the network's size), so
a CPU runs it in a blink (``params_ema`` wrapper, the official key names). ``detection_Resnet50_tiny.pth``: RetinaFace with
a narrow one-block-per-stage ResNet. The detector's heads are set so that it reports exactly
one face wherever the image is: only the 512 px anchors score above the threshold (their
random weights make the best one depend on the image), their boxes are stretched so far
that non-maximum suppression keeps one, and its landmarks sit in a face's pattern. Restored
faces are noise; the files let every face-restoration route run without a download.
``tiny-codeformer.pth``: CodeFormer with 32 channels at every level (GroupNorm's 32 groups are
the floor), restoring 128x128 faces over the same 16x16 code grid, a 32-entry codebook and a
one-layer transformer (``params_ema``, the official key names).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..addon_files import AddonFolders
from .align import TEMPLATE_512
from .codeformer import CodeFormer
from .gfpgan import GFPGANv1Clean
from .retinaface import RetinaFace, _Head, _ResNet

__all__ = ["TINY_GFPGAN", "TINY_CODEFORMER", "TINY_DETECTOR", "tiny_gfpgan", "tiny_codeformer", "tiny_detector",
           "write_tiny_faces", "write_demo_faces"]

log = logging.getLogger(__name__)

TINY_GFPGAN = "tiny-GFPGANv1.4.pth"
TINY_CODEFORMER = "tiny-codeformer.pth"
TINY_DETECTOR = "detection_Resnet50_tiny.pth"


def tiny_gfpgan(seed: int = 4321) -> GFPGANv1Clean:
    torch.manual_seed(seed)
    unet = {2 ** i: 4 for i in range(2, 8)}
    return GFPGANv1Clean(7, unet, {r: 2 * c for r, c in unet.items()}, style_dim=16, num_mlp=2, sft_half=True)


def tiny_codeformer(seed: int = 4323) -> CodeFormer:
    torch.manual_seed(seed)
    return CodeFormer(nf=32, mult=(1, 1, 1, 1), emb_dim=16, codebook_size=32, dim=32, heads=1, layers=1,
                      connect=(32, 64))


def tiny_detector(seed: int = 4322) -> RetinaFace:
    torch.manual_seed(seed)
    net = RetinaFace(_ResNet(8, (4, 8, 8, 8), (1, 1, 1, 1)), [32, 32, 32], 8)
    cls, box, ldm = ([(h.conv1x1.weight, h.conv1x1.bias) for h in heads if isinstance(h, _Head)]
                     for heads in (net.ClassHead, net.BboxHead, net.LandmarkHead))
    with torch.no_grad():
        for weight, bias in (*cls, *box, *ldm):
            weight.normal_(0, 0.01)
            bias.zero_()  # type: ignore[union-attr]
        # background wins on the two finer levels and on the 256 px anchors ...
        for _, bias in cls:
            bias.copy_(torch.tensor([6.0, -6.0, 6.0, -6.0]))  # type: ignore[union-attr]
        cls[2][1].copy_(torch.tensor([6.0, -6.0, -6.0, 6.0]))  # type: ignore[union-attr]  # ... the 512 px ones: faces
        box[2][1].copy_(torch.tensor([0, 0, 0, 0, 0, 0, 12.0, 12.0]))  # type: ignore[union-attr] # boxes ~11x their anchor
        # Landmarks: the aligned template's pattern over the middle half of the anchor, in
        # units of 0.1 x anchor size (RetinaFace's variance).
        pattern = ((torch.tensor(TEMPLATE_512, dtype=torch.float32) / 512 - 0.5) * 0.5 / 0.1).flatten()
        ldm[2][1].copy_(torch.cat([pattern, pattern]))  # type: ignore[union-attr]
    return net


def write_tiny_faces(folder: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the three files into ``folder`` (the face_restorer home, models/GFPGAN); the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make, wrap in ((TINY_GFPGAN, tiny_gfpgan, True), (TINY_CODEFORMER, tiny_codeformer, True),
                              (TINY_DETECTOR, tiny_detector, False)):
        path = folder / name
        if path.exists() and not overwrite:
            continue
        sd = {k: v.contiguous() for k, v in make().state_dict().items()}
        torch.save({"params_ema": sd} if wrap else sd, path)
        written.append(path)
    return written


def write_demo_faces(addons: AddonFolders) -> None:
    """Demo mode: the tiny files in the face_restorer home folder, when not there yet."""
    written = write_tiny_faces(addons.home("face_restorer"))
    if written:
        log.warning("DEMO MODE: wrote tiny random-weight face restorers and a detector %s; restored faces are noise",
                    ", ".join(p.name for p in written))
        addons.refresh("face_restorer")
