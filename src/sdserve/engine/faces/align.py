"""Aligning a face to the restorer's template and pasting the restored face back.

The five landmarks are mapped onto FFHQ's 512x512 template (the one GFPGAN and CodeFormer
are trained on) by the least-squares similarity transform (rotation, uniform scale,
translation); the face is resampled with ``grid_sample`` and, once restored, resampled
back by the inverse transform and blended in under a feathered mask, so no seam shows.
A1111 (through facexlib) uses a face-parsing network for that mask; this uses the aligned
square with soft edges, as facexlib does without one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["TEMPLATE_512", "similarity_transform", "warp_face", "paste_face", "feather_mask"]

# Left eye, right eye, nose tip, left and right mouth corners in the 512x512 aligned face.
TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                         [201.26117, 371.41043], [313.08905, 371.15118]])
# What lies outside the image in an aligned face (facexlib's grey, RGB).
_BORDER = (132 / 255, 133 / 255, 135 / 255)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix [[a, -b, tx], [b, a, ty]] taking the points ``src`` closest to ``dst``
    (least squares over all points)."""
    rows = []
    rhs = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows += [[x, -y, 1.0, 0.0], [y, x, 0.0, 1.0]]
        rhs += [u, v]
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def _invert(m: np.ndarray) -> np.ndarray:
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def _sample(img: torch.Tensor, out_to_in: np.ndarray, out_h: int, out_w: int) -> torch.Tensor:
    """``img`` [B, C, H, W] resampled onto an out_h x out_w grid whose pixel (x, y) reads
    ``img`` at ``out_to_in @ (x, y, 1)`` (pixel centres at integers, as OpenCV's warps);
    zero outside."""
    _, _, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64), torch.arange(out_w, dtype=torch.float64),
                            indexing="ij")
    m = torch.from_numpy(out_to_in)
    sx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    sy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], dim=-1)[None]
    grid = grid.to(img.device, img.dtype).expand(img.shape[0], -1, -1, -1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def warp_face(img: torch.Tensor, landmarks: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """The aligned ``size`` x ``size`` face of ``img`` ([1, 3, H, W] in [0, 1]) and the
    image -> face matrix."""
    m = similarity_transform(landmarks, TEMPLATE_512 * (size / 512))
    border = torch.tensor(_BORDER, device=img.device, dtype=img.dtype).view(1, 3, 1, 1)
    face = _sample(img - border, _invert(m), size, size) + border
    return face, m


def feather_mask(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[1, 1, size, size]: 0 at the aligned square's border, rising smoothly to 1 a tenth of
    the side inside (after a twentieth that stays 0, as facexlib erodes before it blurs)."""
    edge = torch.arange(size, dtype=torch.float32)
    d = torch.minimum(edge, size - 1 - edge) / size
    ramp = ((d - 0.05) / 0.1).clamp(0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible edge where it reaches 1
    return torch.minimum(ramp[:, None], ramp[None, :])[None, None].to(device, dtype)


def paste_face(img: torch.Tensor, face: torch.Tensor, m: np.ndarray) -> torch.Tensor:
    """``img`` with the restored ``face`` (aligned by ``m``) blended back in place."""
    _, _, h, w = img.shape
    size = face.shape[-1]
    both = torch.cat([face, feather_mask(size, face.device, face.dtype)], dim=1)
    back = _sample(both, m, h, w)
    alpha = back[:, 3:]
    return back[:, :3] * alpha + img * (1 - alpha)
