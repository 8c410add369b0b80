"""Faces in an image with RetinaFace: prior boxes, box and landmark decoding, NMS.

All in torch (torchvision's ``ops.nms`` is not installable everywhere). The settings are
facexlib's as A1111 uses them: the image resized so its short side is 640, faces kept
above 0.97 confidence, overlapping boxes (IoU > 0.4) suppressed, faces whose eyes are less
than 5 px apart dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .retinaface import RetinaFace

__all__ = ["Face", "prior_boxes", "decode_boxes", "decode_landmarks", "nms", "detect_faces"]

# RetinaFace's anchors: per pyramid level (stride), two square sizes in pixels.
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE = (0.1, 0.2)
# The mean (BGR, 0-255) the detector was trained with subtracted.
_BGR_MEAN = (104.0, 117.0, 123.0)
DETECT_SIDE = 640
CONFIDENCE = 0.97
NMS_IOU = 0.4
MIN_EYE_DISTANCE = 5.0


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
    score: float
    # Left eye, right eye, nose, left and right mouth corners: (x, y) in image pixels.
    landmarks: tuple[tuple[float, float], ...]


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """[N, 4] anchors (cx, cy, w, h), relative to the image size, in the order the heads
    emit them: level, row, column, anchor size."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        gy, gx = torch.meshgrid(cy, cx, indexing="ij")
        k = len(sizes)
        centers = torch.stack([gx, gy], dim=-1).reshape(-1, 1, 2).expand(-1, k, 2)
        wh = torch.tensor([[s / width, s / height] for s in sizes], dtype=torch.float64).expand(rows * cols, k, 2)
        out.append(torch.cat([centers, wh], dim=-1).reshape(-1, 4))
    return torch.cat(out).float()


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Offsets [N, 4] -> boxes (x0, y0, x1, y1), relative: centres move by offset x variance
    x prior size; sizes scale by exp(offset x variance)."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCE[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCE[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def decode_landmarks(pre: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Offsets [N, 10] -> five (x, y) points per prior [N, 5, 2], relative."""
    return priors[:, None, :2] + pre.view(-1, 5, 2) * VARIANCE[0] * priors[:, None, 2:]


def _iou(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(box[:2], others[:, :2])
    rb = torch.minimum(box[2:], others[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = (box[2:] - box[:2]).prod()
    areas = (others[:, 2:] - others[:, :2]).prod(dim=1)
    return inter / (area + areas - inter).clamp(min=1e-12)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Indices of the boxes kept, best first: each box suppresses the lower-scored ones that
    overlap it by more than ``iou`` (intersection over union), greedily."""
    order = scores.argsort(descending=True, stable=True)
    keep = []
    while order.numel():
        best, order = order[0], order[1:]
        keep.append(int(best))
        if order.numel():
            order = order[_iou(boxes[best], boxes[order]) <= iou]
    return torch.tensor(keep, dtype=torch.long)


@torch.inference_mode()
def detect_faces(net: RetinaFace, rgb: torch.Tensor, *, confidence: float = CONFIDENCE) -> list[Face]:
    """Faces in ``rgb`` ([3, H, W] floats in [0, 1] on the net's device), best first."""
    _, h, w = rgb.shape
    scale = DETECT_SIDE / min(h, w)
    dh, dw = max(1, round(h * scale)), max(1, round(w * scale))
    x = rgb[None].flip(1) * 255.0  # RGB -> BGR, 0-255, as the detector was trained
    if (dh, dw) != (h, w):
        x = F.interpolate(x, size=(dh, dw), mode="bicubic", align_corners=False, antialias=scale < 1)
    x = x - torch.tensor(_BGR_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    param = next(net.parameters())
    loc, conf, ldm = net(x.to(param.dtype))
    priors = prior_boxes(dh, dw).to(loc.device)
    keep = conf[0] > confidence
    if not keep.any():
        return []
    boxes = decode_boxes(loc[0][keep].float(), priors[keep]) * torch.tensor([w, h, w, h], device=loc.device)
    points = decode_landmarks(ldm[0][keep].float(), priors[keep]) * torch.tensor([w, h], device=loc.device)
    scores = conf[0][keep].float()
    faces = []
    for i in nms(boxes, scores, NMS_IOU).tolist():
        pts = points[i].tolist()
        if math.dist(pts[0], pts[1]) < MIN_EYE_DISTANCE:
            continue
        faces.append(Face(tuple(boxes[i].tolist()), float(scores[i]), tuple((p[0], p[1]) for p in pts)))
    return faces
